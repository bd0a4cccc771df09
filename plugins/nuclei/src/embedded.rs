//! The default templates, compiled into the binary so that a staged plugin (only
//! its executable is copied beside the manifest) runs with no other files. They
//! are the files of `plugins/nuclei/templates/`; the config's `templates` list
//! replaces them.

/// `(file name, YAML text)` of every default template.
pub const DEFAULT_TEMPLATES: &[(&str, &str)] = &[
    (
        "apache-version.yaml",
        include_str!("../templates/apache-version.yaml"),
    ),
    (
        "apache-path-traversal.yaml",
        include_str!("../templates/apache-path-traversal.yaml"),
    ),
    (
        "exposed-git-config.yaml",
        include_str!("../templates/exposed-git-config.yaml"),
    ),
    (
        "exposed-env-file.yaml",
        include_str!("../templates/exposed-env-file.yaml"),
    ),
    (
        "apache-server-status.yaml",
        include_str!("../templates/apache-server-status.yaml"),
    ),
    ("phpinfo.yaml", include_str!("../templates/phpinfo.yaml")),
    (
        "admin-login-panel.yaml",
        include_str!("../templates/admin-login-panel.yaml"),
    ),
];
