//! Dependency resolution: which version of each plugin to install so that
//! every requirement of the request and of every chosen release holds.
//!
//! PubGrub does the search and, when there is no solution, derives the chain
//! of reasons, which [`Explanation`] words for an operator. A requirement is
//! turned into the set of the catalog's versions it matches (by `semver`'s own
//! rules, pre-releases included), so PubGrub never has to reason about
//! requirement syntax. Plugins already installed and not being upgraded are
//! pinned to their installed version. A solution with a dependency cycle is
//! refused: a plugin cannot be installed before itself.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;

use pubgrub::{
    DefaultStringReportFormatter, DefaultStringReporter, Dependencies, DependencyConstraints,
    DependencyProvider, DerivationTree, Derived, External, Map, PackageResolutionStatistics,
    PubGrubError, Ranges, ReportFormatter, Reporter as _, Term,
};
use semver::{Version, VersionReq};

/// Most solver steps before a resolution is abandoned; real requests take a
/// few hundred.
pub const MAX_SOLVER_STEPS: u32 = 100_000;

/// The version of the synthetic root package standing for the request.
const ROOT_VERSION: Version = Version::new(0, 0, 0);

/// What the resolver knows of one release: its dependencies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseDependencies {
    /// Plugin name → requirement, as written (for explanations) and parsed.
    pub requirements: BTreeMap<String, (String, VersionReq)>,
}

/// Every known release of every plugin: from the repositories' indexes and
/// from what is installed.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    plugins: BTreeMap<String, BTreeMap<Version, ReleaseDependencies>>,
}

impl Catalog {
    /// Adds a release; the first one added for a name and version wins.
    pub fn add(&mut self, name: &str, version: Version, dependencies: ReleaseDependencies) {
        self.plugins
            .entry(name.to_string())
            .or_default()
            .entry(version)
            .or_insert(dependencies);
    }

    /// The versions of `name`, oldest first.
    pub fn versions(&self, name: &str) -> impl DoubleEndedIterator<Item = &Version> {
        self.plugins.get(name).into_iter().flat_map(|v| v.keys())
    }

    fn matching(&self, name: &str, requirement: &VersionReq) -> Ranges<Version> {
        self.versions(name)
            .filter(|v| requirement.matches(v))
            .fold(Ranges::empty(), |set, v| {
                set.union(&Ranges::singleton(v.clone()))
            })
    }

    fn listed(&self, name: &str) -> String {
        let versions: Vec<String> = self.versions(name).map(Version::to_string).collect();
        if versions.is_empty() {
            format!("no plugin {name} is known to any configured repository")
        } else {
            format!("the known versions of {name} are {}", versions.join(", "))
        }
    }
}

/// One plugin the request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub name: String,
    /// As written, for explanations.
    pub text: String,
    pub requirement: VersionReq,
}

/// The chosen releases, each after the releases it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    pub order: Vec<(String, Version)>,
}

/// Why no set of releases satisfies a request.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no release satisfies the request:\n{explanation}")]
    NoSolution { explanation: String },
    #[error("refusing a dependency cycle: {cycle}")]
    Cycle { cycle: String },
    #[error("dependency resolution gave up after {MAX_SOLVER_STEPS} steps")]
    TooComplex,
}

/// A package of the resolution: the request itself, or a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Package {
    Request,
    Plugin(String),
}

impl fmt::Display for Package {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Package::Request => f.write_str("the request"),
            Package::Plugin(name) => f.write_str(name),
        }
    }
}

/// The step budget was spent.
#[derive(Debug, thiserror::Error)]
#[error("too many solver steps")]
struct Exhausted;

struct Provider<'a> {
    catalog: &'a Catalog,
    request: &'a [Requirement],
    pinned: &'a BTreeMap<String, Version>,
    steps: Cell<u32>,
}

impl Provider<'_> {
    fn constraints(
        &self,
        requirements: impl Iterator<Item = (String, String, VersionReq)>,
    ) -> Dependencies<Package, Ranges<Version>, String> {
        let mut constraints = Vec::new();
        for (name, text, requirement) in requirements {
            let set = self.catalog.matching(&name, &requirement);
            if set.is_empty() {
                return Dependencies::Unavailable(format!(
                    "it requires {name} {text}, which no release matches ({})",
                    self.catalog.listed(&name)
                ));
            }
            let set = match self.pinned.get(&name) {
                Some(pinned) => set.intersection(&Ranges::singleton(pinned.clone())),
                None => set,
            };
            constraints.push((Package::Plugin(name), set));
        }
        Dependencies::Available(DependencyConstraints::from_iter(constraints))
    }
}

impl DependencyProvider for Provider<'_> {
    type P = Package;
    type V = Version;
    type VS = Ranges<Version>;
    type M = String;
    type Err = Exhausted;
    type Priority = (u32, std::cmp::Reverse<usize>);

    fn prioritize(
        &self,
        package: &Package,
        range: &Ranges<Version>,
        statistics: &PackageResolutionStatistics,
    ) -> Self::Priority {
        let Package::Plugin(name) = package else {
            return (u32::MAX, std::cmp::Reverse(0));
        };
        let candidates = self
            .catalog
            .versions(name)
            .filter(|v| range.contains(v))
            .count();
        (statistics.conflict_count(), std::cmp::Reverse(candidates))
    }

    fn choose_version(
        &self,
        package: &Package,
        range: &Ranges<Version>,
    ) -> Result<Option<Version>, Exhausted> {
        Ok(match package {
            Package::Request => Some(ROOT_VERSION),
            Package::Plugin(name) => self
                .catalog
                .versions(name)
                .rev()
                .find(|v| range.contains(v))
                .cloned(),
        })
    }

    fn get_dependencies(
        &self,
        package: &Package,
        version: &Version,
    ) -> Result<Dependencies<Package, Ranges<Version>, String>, Exhausted> {
        Ok(match package {
            Package::Request => self.constraints(
                self.request
                    .iter()
                    .map(|r| (r.name.clone(), r.text.clone(), r.requirement.clone())),
            ),
            Package::Plugin(name) => {
                match self.catalog.plugins.get(name).and_then(|v| v.get(version)) {
                    Some(release) => self.constraints(
                        release
                            .requirements
                            .iter()
                            .map(|(n, (text, req))| (n.clone(), text.clone(), req.clone())),
                    ),
                    None => Dependencies::Unavailable("it is not in the catalog".into()),
                }
            }
        })
    }

    fn should_cancel(&self) -> Result<(), Exhausted> {
        let steps = self.steps.get() + 1;
        self.steps.set(steps);
        if steps > MAX_SOLVER_STEPS {
            Err(Exhausted)
        } else {
            Ok(())
        }
    }
}

/// The releases to install for `request`, each after its dependencies, with
/// the plugins of `pinned` held at their version.
pub fn resolve(
    catalog: &Catalog,
    request: &[Requirement],
    pinned: &BTreeMap<String, Version>,
) -> Result<Resolution, ResolveError> {
    // A request the catalog cannot meet at all is said plainly, without a
    // derivation.
    for r in request {
        if catalog.matching(&r.name, &r.requirement).is_empty() {
            return Err(ResolveError::NoSolution {
                explanation: format!(
                    "nothing matches {} {}: {}",
                    r.name,
                    r.text,
                    catalog.listed(&r.name)
                ),
            });
        }
    }
    let provider = Provider {
        catalog,
        request,
        pinned,
        steps: Cell::new(0),
    };
    let selected = match pubgrub::resolve(&provider, Package::Request, ROOT_VERSION) {
        Ok(selected) => selected,
        Err(PubGrubError::NoSolution(mut tree)) => {
            tree.collapse_no_versions();
            return Err(ResolveError::NoSolution {
                explanation: explain(&tree, catalog),
            });
        }
        Err(_) => return Err(ResolveError::TooComplex),
    };
    let chosen: BTreeMap<String, Version> = selected
        .into_iter()
        .filter_map(|(package, version)| match package {
            Package::Plugin(name) => Some((name, version)),
            Package::Request => None,
        })
        .collect();
    install_order(catalog, &chosen)
}

/// A depth-first walk that puts every release after its dependencies and
/// refuses a cycle, naming it.
fn install_order(
    catalog: &Catalog,
    chosen: &BTreeMap<String, Version>,
) -> Result<Resolution, ResolveError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        catalog: &'a Catalog,
        chosen: &'a BTreeMap<String, Version>,
        marks: &mut BTreeMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        order: &mut Vec<(String, Version)>,
    ) -> Result<(), ResolveError> {
        match marks.get(name) {
            Some(Mark::Done) => return Ok(()),
            Some(Mark::Visiting) => {
                let start = path.iter().position(|n| *n == name).unwrap_or(0);
                let cycle: Vec<String> = path[start..]
                    .iter()
                    .chain(std::iter::once(&name))
                    .map(|n| format!("{n} {}", chosen[*n]))
                    .collect();
                return Err(ResolveError::Cycle {
                    cycle: cycle.join(" -> "),
                });
            }
            None => {}
        }
        marks.insert(name, Mark::Visiting);
        path.push(name);
        let version = &chosen[name];
        if let Some(release) = catalog.plugins.get(name).and_then(|v| v.get(version)) {
            for dependency in release.requirements.keys() {
                if chosen.contains_key(dependency) {
                    visit(dependency, catalog, chosen, marks, path, order)?;
                }
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
        order.push((name.to_string(), version.clone()));
        Ok(())
    }
    let mut marks = BTreeMap::new();
    let mut order = Vec::with_capacity(chosen.len());
    for name in chosen.keys() {
        visit(
            name,
            catalog,
            chosen,
            &mut marks,
            &mut Vec::new(),
            &mut order,
        )?;
    }
    Ok(Resolution { order })
}

/// PubGrub's derivation in words, with version sets written over the
/// catalog's versions (`>=1.2.0, <2.0.0`) rather than as lists.
fn explain(tree: &DerivationTree<Package, Ranges<Version>, String>, catalog: &Catalog) -> String {
    DefaultStringReporter::report_with_formatter(tree, &Explanation { catalog })
}

/// The wording of [`explain`].
struct Explanation<'a> {
    catalog: &'a Catalog,
}

impl Explanation<'_> {
    fn set(&self, package: &Package, set: &Ranges<Version>) -> Ranges<Version> {
        match package {
            Package::Plugin(name) => set.simplify(self.catalog.versions(name)),
            Package::Request => set.clone(),
        }
    }

    fn simplify(
        &self,
        external: &External<Package, Ranges<Version>, String>,
    ) -> External<Package, Ranges<Version>, String> {
        match external {
            External::NoVersions(p, s) => External::NoVersions(p.clone(), self.set(p, s)),
            External::FromDependencyOf(p, s, d, ds) => {
                External::FromDependencyOf(p.clone(), self.set(p, s), d.clone(), self.set(d, ds))
            }
            External::Custom(p, s, m) => External::Custom(p.clone(), self.set(p, s), m.clone()),
            other => other.clone(),
        }
    }

    fn terms(
        &self,
        terms: &Map<Package, Term<Ranges<Version>>>,
    ) -> Map<Package, Term<Ranges<Version>>> {
        terms
            .iter()
            .map(|(p, t)| {
                let t = match t {
                    Term::Positive(s) => Term::Positive(self.set(p, s)),
                    Term::Negative(s) => Term::Negative(self.set(p, s)),
                };
                (p.clone(), t)
            })
            .collect()
    }
}

type Tree = Derived<Package, Ranges<Version>, String>;
type Ext = External<Package, Ranges<Version>, String>;
type Terms = Map<Package, Term<Ranges<Version>>>;

impl ReportFormatter<Package, Ranges<Version>, String> for Explanation<'_> {
    type Output = String;

    fn format_external(&self, external: &Ext) -> String {
        match self.simplify(external) {
            External::FromDependencyOf(Package::Request, _, dependency, set) => {
                format!("the request needs {dependency} {}", shown(&set))
            }
            External::Custom(package, set, reason) => {
                format!("{package} {} cannot be used because {reason}", shown(&set))
            }
            External::NoVersions(package, set) => {
                format!("no release of {package} is in {}", shown(&set))
            }
            External::FromDependencyOf(package, set, dependency, dependency_set) => format!(
                "{package} {} depends on {dependency} {}",
                shown(&set),
                shown(&dependency_set)
            ),
            External::NotRoot(..) => "the request must be satisfied".into(),
        }
    }

    fn format_terms(&self, terms: &Terms) -> String {
        let terms = self.terms(terms);
        if terms.len() == 1 {
            if let Some((Package::Request, Term::Positive(_))) = terms.iter().next() {
                return "the request cannot be satisfied".into();
            }
        }
        ReportFormatter::<Package, Ranges<Version>, String>::format_terms(
            &DefaultStringReportFormatter,
            &terms,
        )
    }

    fn explain_both_external(&self, e1: &Ext, e2: &Ext, current: &Terms) -> String {
        format!(
            "Because {} and {}, {}.",
            self.format_external(e1),
            self.format_external(e2),
            self.format_terms(current)
        )
    }

    fn explain_both_ref(
        &self,
        id1: usize,
        d1: &Tree,
        id2: usize,
        d2: &Tree,
        current: &Terms,
    ) -> String {
        format!(
            "Because {} ({id1}) and {} ({id2}), {}.",
            self.format_terms(&d1.terms),
            self.format_terms(&d2.terms),
            self.format_terms(current)
        )
    }

    fn explain_ref_and_external(&self, id: usize, d: &Tree, e: &Ext, current: &Terms) -> String {
        format!(
            "Because {} ({id}) and {}, {}.",
            self.format_terms(&d.terms),
            self.format_external(e),
            self.format_terms(current)
        )
    }

    fn and_explain_external(&self, e: &Ext, current: &Terms) -> String {
        format!(
            "And because {}, {}.",
            self.format_external(e),
            self.format_terms(current)
        )
    }

    fn and_explain_ref(&self, id: usize, d: &Tree, current: &Terms) -> String {
        format!(
            "And because {} ({id}), {}.",
            self.format_terms(&d.terms),
            self.format_terms(current)
        )
    }

    fn and_explain_prior_and_external(&self, prior: &Ext, e: &Ext, current: &Terms) -> String {
        format!(
            "And because {} and {}, {}.",
            self.format_external(prior),
            self.format_external(e),
            self.format_terms(current)
        )
    }
}

/// A version set as an operator reads it: `*` is "any version".
fn shown(set: &Ranges<Version>) -> String {
    if set == &Ranges::full() {
        "(any version)".into()
    } else {
        set.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(deps: &[(&str, &str)]) -> ReleaseDependencies {
        ReleaseDependencies {
            requirements: deps
                .iter()
                .map(|(n, r)| {
                    (
                        n.to_string(),
                        (r.to_string(), VersionReq::parse(r).unwrap()),
                    )
                })
                .collect(),
        }
    }

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn want(name: &str, req: &str) -> Requirement {
        Requirement {
            name: name.into(),
            text: req.into(),
            requirement: VersionReq::parse(req).unwrap(),
        }
    }

    #[test]
    fn the_newest_consistent_releases_are_chosen_dependencies_first() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[("helper", "^1")]));
        c.add("probe", v("1.1.0"), release(&[("helper", "^1.2")]));
        c.add("helper", v("1.1.0"), release(&[]));
        c.add("helper", v("1.3.0"), release(&[]));
        c.add("helper", v("2.0.0"), release(&[]));
        let r = resolve(&c, &[want("probe", "^1")], &BTreeMap::new()).unwrap();
        assert_eq!(
            r.order,
            vec![("helper".into(), v("1.3.0")), ("probe".into(), v("1.1.0"))]
        );
    }

    #[test]
    fn a_pinned_installed_plugin_holds_back_the_choice() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[("helper", "^1")]));
        c.add("probe", v("2.0.0"), release(&[("helper", "^2")]));
        c.add("helper", v("1.0.0"), release(&[]));
        c.add("helper", v("2.0.0"), release(&[]));
        let pinned = BTreeMap::from([("helper".to_string(), v("1.0.0"))]);
        let r = resolve(&c, &[want("probe", "*")], &pinned).unwrap();
        assert_eq!(r.order[1], ("probe".into(), v("1.0.0")));
    }

    #[test]
    fn conflicting_requirements_are_explained_by_name() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[("helper", "^2")]));
        c.add("mapper", v("1.0.0"), release(&[("helper", "^1")]));
        c.add("helper", v("1.0.0"), release(&[]));
        c.add("helper", v("2.0.0"), release(&[]));
        let err = resolve(
            &c,
            &[want("probe", "^1"), want("mapper", "^1")],
            &BTreeMap::new(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ResolveError::NoSolution { .. }), "{text}");
        for needle in ["probe", "mapper", "helper", "the request"] {
            assert!(text.contains(needle), "{needle} missing from: {text}");
        }
    }

    #[test]
    fn a_dependency_no_release_matches_is_named_with_the_known_versions() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[("helper", "^3")]));
        c.add("helper", v("1.0.0"), release(&[]));
        let err = resolve(&c, &[want("probe", "^1")], &BTreeMap::new()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("helper ^3"), "{text}");
        assert!(
            text.contains("the known versions of helper are 1.0.0"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_plugin_or_version_is_said_plainly() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[]));
        let err = resolve(&c, &[want("nope", "*")], &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("no plugin nope is known"), "{err}");
        let err = resolve(&c, &[want("probe", "^2")], &BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("nothing matches probe ^2"),
            "{err}"
        );
    }

    #[test]
    fn a_cycle_is_refused_and_named() {
        let mut c = Catalog::default();
        c.add("a", v("1.0.0"), release(&[("b", "^1")]));
        c.add("b", v("1.0.0"), release(&[("c", "^1")]));
        c.add("c", v("1.0.0"), release(&[("a", "^1")]));
        let err = resolve(&c, &[want("a", "^1")], &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, ResolveError::Cycle { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("a 1.0.0 -> b 1.0.0 -> c 1.0.0 -> a 1.0.0"),
            "{err}"
        );
    }

    #[test]
    fn a_pre_release_is_chosen_only_when_a_requirement_names_one() {
        let mut c = Catalog::default();
        c.add("probe", v("1.0.0"), release(&[]));
        c.add("probe", v("1.1.0-beta.1"), release(&[]));
        let r = resolve(&c, &[want("probe", "^1")], &BTreeMap::new()).unwrap();
        assert_eq!(r.order, vec![("probe".into(), v("1.0.0"))]);
        let r = resolve(&c, &[want("probe", "^1.1.0-beta")], &BTreeMap::new()).unwrap();
        assert_eq!(r.order, vec![("probe".into(), v("1.1.0-beta.1"))]);
    }
}
