//! Inputs that crashed a fuzz target (`scripts/fuzz.sh`), kept as plain tests so
//! the fixes stay fixed without a nightly-flag fuzz build.

use stackd::render::compose::dotenv;
use stackd::render::files::RepoPath;

fn no_variables(_: &str) -> Option<String> {
    None
}

fn env_file() -> RepoPath {
    RepoPath::new("app/.env").unwrap()
}

/// `interpolation` target: a last line of `export` and tabs parsed as a bare key
/// named "" instead of an error.
#[test]
fn dotenv_lone_export_on_last_line_is_an_error() {
    let input = include_str!("fuzz_regressions/dotenv_lone_export.env");
    assert_eq!(input, format!("PpoeH2\nexport{}", "\t".repeat(28)));
    let error = dotenv::parse(input, &env_file(), &no_variables).unwrap_err();
    assert_eq!(
        error.to_string(),
        "app/.env:2:0: invalid env file: missing variable name after \"export\""
    );
}

/// The same line with a space, and before another line, behaves alike.
#[test]
fn dotenv_lone_export_is_refused_anywhere() {
    for input in ["export ", "export \nA=1\n"] {
        let result = dotenv::parse(input, &env_file(), &no_variables);
        assert!(result.is_err(), "{input:?} parsed as {result:?}");
    }
    // A key that merely starts with "export" is still a key.
    let entries = dotenv::parse("exported=1\n", &env_file(), &no_variables).unwrap();
    assert_eq!(
        entries,
        vec![("exported".to_string(), Some("1".to_string()))]
    );
}

/// `compose_yaml` target (a libFuzzer timeout): odd indentation turns `expose`
/// into the range `3306 - 33060`, about 30,000 ports. Deduplicating them by
/// scanning lists was quadratic; the output must still hold each port once.
#[test]
fn a_huge_expose_range_renders_each_port_once() {
    use stackd::render::files::MemSource;
    let input = include_str!("fuzz_regressions/huge-expose-range.yaml");
    let source = MemSource::new().with_file("app/compose.yaml", input);
    let options = stackd::render::LoadOptions {
        dir: RepoPath::new("app").unwrap(),
        ..Default::default()
    };
    let loaded = stackd::render::load(&source, &options).unwrap();
    assert_eq!(
        loaded.project.services["wodb"].expose.len(),
        33060 - 3306 + 1
    );
    let stack = stackd::render::stack_for("app", "app", loaded.project, None);
    let rendered = stackd::render::render(&stack, &loaded.secrets, &Default::default()).unwrap();
    let service = rendered
        .objects
        .iter()
        .find(|o| o.kind() == "Service" && o.name() == "wodb")
        .unwrap()
        .to_json();
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 33060 - 3306 + 1);
    assert_eq!(ports[0]["name"], "3306-tcp");
    let statefulset = rendered
        .objects
        .iter()
        .find(|o| o.name() == "wodb" && o.kind() == "StatefulSet")
        .unwrap()
        .to_json();
    let container_ports = statefulset["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap();
    assert_eq!(container_ports.len(), 33060 - 3306 + 1);
}
