//! `docs/commands.md` is generated from the command table; this test fails when the committed
//! file no longer matches what the code generates.

use slotway::command::CommandTable;
use slotway::reference;

#[test]
fn committed_command_reference_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/commands.md");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = reference::markdown(&CommandTable::builtin());
    if committed != generated {
        let first_diff = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "the files differ in length".to_owned(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "docs/commands.md is out of date ({first_diff}): \
             run `cargo run -- commands > docs/commands.md` and commit the result"
        );
    }
}
