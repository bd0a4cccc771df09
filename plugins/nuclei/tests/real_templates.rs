//! The public nuclei templates copied into tests/fixtures/nuclei-templates: every
//! one loads and runs (none is skipped), and each has a response that must match
//! and a near miss that must not, served by a loopback fixture server.

mod support;

use std::path::PathBuf;

use secflow_nuclei::template::{self, Loaded};
use support::{real_templates_dir, rule_ids, run_plugin, schema_errors, Reply, Server};

const HTML: (&str, &str) = ("Content-Type", "text/html");
const PLAIN: (&str, &str) = ("Content-Type", "text/plain");
const OCTET: (&str, &str) = ("Content-Type", "application/octet-stream");

/// One template's fixture: the reply every path gets when it must match, and
/// the near miss when it must not.
struct Case {
    file: &'static str,
    hit: Reply,
    miss: Reply,
}

fn ok(headers: &[(&str, &str)], body: &str) -> Reply {
    Reply::new(200, headers, body)
}

fn cases() -> Vec<Case> {
    let passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n";
    let no_passwd = "<html>Forbidden path</html>";
    let c = |file, hit, miss| Case { file, hit, miss };
    vec![
        c("http/cves/2021/CVE-2021-3223.yaml", ok(&[PLAIN], passwd), ok(&[PLAIN], "root:x:1:1:")),
        c("http/cves/2021/CVE-2021-40978.yaml", ok(&[PLAIN], passwd), Reply::new(403, &[PLAIN], passwd)),
        c("http/cves/2021/CVE-2021-41773.yaml", ok(&[PLAIN], passwd), ok(&[HTML], no_passwd)),
        c("http/cves/2021/CVE-2021-42013.yaml", ok(&[PLAIN], passwd), ok(&[HTML], no_passwd)),
        c("http/exposed-panels/adminer-panel.yaml",
          ok(&[HTML], "<title>Login - Adminer</title><span class=\"version\">4.8.1</span>"),
          Reply::new(404, &[HTML], "<title>Login - Adminer</title>")),
        c("http/exposed-panels/grafana-detect.yaml",
          ok(&[HTML], "<title>Grafana</title><script>{\"version\":\"9.5.2\"}</script>"),
          ok(&[HTML], "<title>Grafana Labs blog</title>")),
        c("http/exposed-panels/jenkins-login.yaml",
          ok(&[HTML], "<title>Sign in [Jenkins]</title>"), Reply::new(403, &[HTML], "<title>Sign in [Jenkins]</title>")),
        c("http/exposed-panels/phpmyadmin-panel.yaml",
          ok(&[HTML], "<input name=\"pma_username\"> <link href=\"x.css?v=5.2.1\">"),
          ok(&[HTML], "<input name=\"username\">")),
        c("http/exposed-panels/wordpress-login.yaml",
          ok(&[HTML], "<title>Log In &lsaquo; Site &#8212; WordPress</title>"), ok(&[HTML], "<title>Blog</title>")),
        c("http/exposures/backups/exposed-mysql-initial.yaml",
          ok(&[PLAIN], "-- Roundcube Webmail initial database structure\nCREATE TABLE"),
          Reply::new(404, &[PLAIN], "-- Roundcube Webmail initial database structure")),
        c("http/exposures/backups/froxlor-database-backup.yaml",
          ok(&[PLAIN], "DROP TABLE IF EXISTS `a`;\nCREATE TABLE `a` (id int, PRIMARY KEY (id));"),
          ok(&[HTML], "DROP TABLE IF EXISTS `a`;\nCREATE TABLE `a` (id int, PRIMARY KEY (id));")),
        c("http/exposures/backups/settings-php-files.yaml",
          ok(&[PLAIN], "define('DB_NAME', 'app');"), ok(&[PLAIN], "define('NAME', 'app');")),
        c("http/exposures/backups/sql-dump.yaml",
          Reply::new(206, &[OCTET], "-- dump\nCREATE TABLE users (id int);\nINSERT INTO users VALUES (1);"),
          ok(&[OCTET], "-- empty dump\n")),
        c("http/exposures/configs/apache-config.yaml",
          ok(&[PLAIN], "<VirtualHost *:80>\nDocumentRoot /var/www\n</VirtualHost>\n"),
          ok(&[PLAIN], "<VirtualHost *:80>\nDocumentRoot /var/www\n")),
        c("http/exposures/configs/cgi-printenv.yaml",
          ok(&[HTML], "<pre>REMOTE_ADDR=\"10.0.0.1\"</pre>"), ok(&[HTML], "<pre>hello</pre>")),
        c("http/exposures/configs/codeigniter-env.yaml",
          ok(&[PLAIN], "APP_NAME=demo\nDB_HOST=localhost\n"), ok(&[PLAIN], "# APP_NAME=demo\n")),
        c("http/exposures/configs/composer-config.yaml",
          ok(&[("Content-Type", "application/json")], "{\"require\": {\"php\": \">=8\"}}"),
          ok(&[HTML], "{\"require\": {\"php\": \">=8\"}}")),
        c("http/exposures/configs/debug-vars.yaml",
          ok(&[("Content-Type", "application/json")], "{\"cmdline\": [\"app\"], \"memstats\": {}}"),
          ok(&[("Content-Type", "application/json")], "{\"cmdline\": [\"app\"]}")),
        c("http/exposures/configs/django-variables-exposed.yaml",
          Reply::new(400, &[HTML], "<h1>DisallowedHost at /</h1>"),
          ok(&[HTML], "<h1>DisallowedHost at /</h1>")),
        c("http/exposures/configs/docker-compose-config.yaml",
          ok(&[PLAIN], "version: '3'\nservices:\n  web:\n    image: nginx\n"),
          ok(&[PLAIN], "services:\n  web:\n    image: nginx\n")),
        c("http/exposures/configs/exposed-bzr.yaml",
          ok(&[PLAIN], "parent_location = bzr+ssh://example/repo\n"),
          ok(&[HTML], "parent_location = bzr+ssh://example/repo\n")),
        c("http/exposures/configs/exposed-darcs.yaml",
          ok(&[PLAIN], "# Binary file regexps:\n\\.png$\n"), ok(&[PLAIN], "# file list\n")),
        c("http/exposures/configs/exposed-gitignore.yaml",
          ok(&[PLAIN], "node_modules/\n.env\n*.log\nbuild/\ncoverage/\n.DS_Store\nvendor/\n"),
          ok(&[HTML], "node_modules/\n.env\n*.log\nbuild/\ncoverage/\n.DS_Store\nvendor/\n")),
        c("http/exposures/configs/exposed-hg.yaml",
          ok(&[PLAIN], "[paths]\ndefault = https://hg.example/repo\n"), ok(&[PLAIN], "[ui]\nusername = x\n")),
        c("http/exposures/configs/exposed-svn.yaml",
          ok(&[PLAIN], "10\n\ndir\n42\nsvn://svn.example/repo\n"),
          ok(&[HTML], "10\n\ndir\n42\nsvn://svn.example/repo\n")),
        c("http/exposures/configs/exposed-vscode.yaml",
          ok(&[HTML], "<title>Index of /.vscode</title>"), ok(&[HTML], "<title>Index of /</title>")),
        c("http/exposures/configs/git-config.yaml",
          ok(&[PLAIN], "[core]\n\trepositoryformatversion = 0\n"),
          ok(&[HTML], "<html><body>[core]</body></html>")),
        c("http/exposures/configs/laravel-env.yaml",
          ok(&[PLAIN], "APP_KEY=base64:abc\nDB_PASSWORD=secret\n"), ok(&[PLAIN], "APP_KEY: base64:abc\n")),
        c("http/exposures/configs/phpinfo-files.yaml",
          ok(&[HTML], "<tr><td class=\"e\">PHP Version </td><td class=\"v\">8.1.2</td></tr> PHP Extension"),
          ok(&[HTML], "PHP Version 8.1.2 only")),
        c("http/exposures/files/crossdomain-xml.yaml",
          ok(&[("Content-Type", "text/xml")], "<cross-domain-policy><allow-access-from domain=\"*\"/></cross-domain-policy>"),
          ok(&[("Content-Type", "text/xml")], "<cross-domain-policy><allow-access-from domain=\"example.com\"/></cross-domain-policy>")),
        c("http/exposures/files/ds-store-file.yaml",
          Reply::new(200, &[OCTET, ("Accept-Ranges", "bytes")], b"\x00\x00\x00\x01Bud1\x00\x00\x10\x00".to_vec()),
          Reply::new(200, &[HTML], "<html>not a DS_Store</html>")),
        c("http/exposures/files/git-mailmap.yaml",
          ok(&[OCTET], "Jane Doe <jane@example.com> <jane@old.example.com>\n"),
          ok(&[OCTET], "# Theresa O'Connor: <tess@example.com>\n")),
        c("http/exposures/logs/event-debug-server-status.yaml",
          ok(&[HTML], "<h1>Event Debug Server Status</h1>Version: <tt>1.2.3</tt>"), ok(&[HTML], "<h1>Status</h1>")),
        c("http/exposures/logs/git-logs-exposure.yaml",
          ok(&[OCTET], "0000000000000000000000000000000000000000 3f786850e387550fdab836ed7e6dc881de23001b Jane <j@e.x> 1700000000 +0000\tcommit (initial): init\n"),
          ok(&[OCTET], "<html><body>log</body></html>")),
        c("http/exposures/logs/laravel-log-file.yaml",
          ok(&[PLAIN], "[2024-01-01 00:00:00] local.ERROR: boom"), ok(&[PLAIN], "[2024-01-01 00:00:00] local.INFO: fine")),
        c("http/exposures/logs/npm-debug-log.yaml",
          ok(&[PLAIN], "0 info it worked\n1 verbose cli [ 'node' ]\n2 verbose stack Error: x\n"),
          ok(&[PLAIN], "0 info it worked\n1 verbose cli [ 'node' ]\n")),
        c("http/misconfiguration/apache/apache-mod-negotiation-listing.yaml",
          Reply::new(406, &[HTML], "<h1>Not Acceptable</h1>Available variants:<ul><li><a href=\"index.php\">index.php</a></li></ul>"),
          Reply::new(404, &[HTML], "<h1>Not Found</h1>")),
        c("http/misconfiguration/apache/apache-server-status.yaml",
          ok(&[HTML], "<h1>Apache Server Status for localhost</h1><dl><dt>Server Version: Apache/2.4.49</dt></dl>"),
          ok(&[HTML], "<h1>Apache Server Status for localhost</h1>")),
        c("http/misconfiguration/nginx/nginx-status.yaml",
          ok(&[PLAIN], "Active connections: 2\nserver accepts handled requests\n"), ok(&[PLAIN], "connections: 2\n")),
        c("http/misconfiguration/nginx/nginx-vhost-traffic-status.yaml",
          ok(&[HTML], "<title>Nginx Vhost Traffic Status</title> Host Zone"), ok(&[HTML], "<title>Nginx Vhost Traffic Status</title>")),
        c("http/technologies/apache/apache-detect.yaml",
          ok(&[HTML, ("Server", "Apache/2.4.49 (Unix)")], "<html>It works!</html>"),
          ok(&[HTML, ("Server", "nginx/1.25.3")], "<html>It works!</html>")),
        c("http/technologies/apache/default-apache2-page.yaml",
          ok(&[HTML], "<title>Apache2 Debian Default Page: It works</title>"), ok(&[HTML], "<title>Welcome</title>")),
        c("http/technologies/apache/tomcat-detect.yaml",
          Reply::new(404, &[HTML], "<h3>Apache Tomcat/9.0.80</h3>"), Reply::new(404, &[HTML], "<h3>Jetty</h3>")),
        c("http/technologies/apache/xampp-default-page.yaml",
          ok(&[HTML], "<title>Welcome to XAMPP</title>"), ok(&[HTML], "<title>Welcome</title>")),
        c("http/technologies/microsoft/aspnet-version-detect.yaml",
          ok(&[HTML, ("X-AspNet-Version", "4.0.30319")], "<html></html>"), ok(&[HTML], "<html>X-Powered</html>")),
        c("http/technologies/microsoft/default-iis7-page.yaml",
          ok(&[HTML], "<title>IIS7</title>"), ok(&[HTML], "<title>IIS8</title>")),
        c("http/technologies/microsoft/microsoft-iis-version.yaml",
          ok(&[HTML, ("Server", "Microsoft-IIS/10.0")], "<html></html>"), ok(&[HTML, ("Server", "nginx")], "<html>IIS</html>")),
        c("http/technologies/nginx/default-nginx-page.yaml",
          ok(&[HTML], "<title>Welcome to nginx!</title>"), ok(&[HTML], "<title>Welcome to Apache!</title>")),
        c("http/technologies/nginx/nginx-version.yaml",
          ok(&[HTML, ("Server", "nginx/1.25.3")], "<html></html>"), ok(&[HTML, ("Server", "nginx")], "<html>nginx/1.2</html>")),
        c("http/technologies/php-detect.yaml",
          ok(&[HTML, ("X-Powered-By", "PHP/8.1.2")], "<html></html>"), ok(&[HTML, ("X-Powered-By", "Express")], "<html>PHP</html>")),
        c("http/technologies/wordpress-detect.yaml",
          ok(&[HTML], "<meta name=\"generator\" content=\"WordPress 6.4.2\" /><a href=\"/wp-login.php\">x</a>"),
          ok(&[HTML], "<meta name=\"generator\" content=\"Hugo\" />")),
    ]
}

fn all_template_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![real_templates_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_copied_public_template_loads_and_none_is_skipped() {
    let files = all_template_files();
    assert_eq!(files.len(), 51, "the fixture set has 51 templates");
    let mut skipped = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        match template::load(&file.display().to_string(), &text) {
            Ok(Loaded::Ready(_)) => {}
            Ok(Loaded::Skipped(skip)) => skipped.push(format!("{}: {:?}", skip.id, skip.features)),
            Err(err) => panic!("{err}"),
        }
    }
    assert!(skipped.is_empty(), "skipped: {skipped:#?}");
}

#[test]
fn every_copied_template_has_a_case_in_the_table() {
    let root = real_templates_dir();
    let table: Vec<&str> = cases().iter().map(|c| c.file).collect();
    for file in all_template_files() {
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        assert!(
            table.contains(&relative.as_str()),
            "{relative} has no fixture case"
        );
    }
}

#[test]
fn each_public_template_matches_its_fixture_and_not_its_near_miss() {
    let root = real_templates_dir();
    let mut failures = Vec::new();
    for case in cases() {
        let path = root.join(case.file);
        let id = {
            let text = std::fs::read_to_string(&path).unwrap();
            match template::load(case.file, &text).unwrap() {
                Loaded::Ready(t) => t.id,
                Loaded::Skipped(s) => panic!("{} skipped: {:?}", s.id, s.features),
            }
        };
        for (must_match, reply) in [(true, case.hit.clone()), (false, case.miss.clone())] {
            let server = Server::start(move |_| reply.clone());
            let outcome = run_plugin(std::slice::from_ref(&path), &server.url);
            if let Some(err) = &outcome.error {
                failures.push(format!("{id}: run failed: {err}"));
                continue;
            }
            assert_eq!(outcome.outputs["templates_run"], 1, "{id}");
            let ids = rule_ids(&outcome);
            let matched = ids
                .iter()
                .any(|r| r == &id || r.starts_with(&format!("{id}:")));
            if matched != must_match {
                failures.push(format!(
                    "{id}: expected {} but findings were {ids:?}",
                    if must_match { "a match" } else { "no match" }
                ));
            }
            for finding in &outcome.findings {
                let errors = schema_errors(finding);
                if !errors.is_empty() {
                    failures.push(format!("{id}: finding fails the schema: {errors:?}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
