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
