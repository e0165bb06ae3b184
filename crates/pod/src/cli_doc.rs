//! `docs/cli.md`, made from the command line's own definition (`cli.rs`),
//! so the reference cannot drift from what `pod --help` says: a test
//! (`tests/cli_doc.rs`) fails when the committed file differs from this.

use clap::CommandFactory;

use crate::cli::Cli;

const PREAMBLE: &str = "# The `pod` command line

Every command, argument and flag, generated from the command line's own
definition (`crates/pod/src/cli.rs`; `POD_UPDATE_CLI_DOC=1 cargo test -p
pod --test cli_doc` rewrites this file). Concepts: `docs/concepts.md`.

## Exit status and output

- 0: done; 2: refused or failed, with one line on stderr: `pod: what was
  wrong and why [code]` (the codes: `docs/operations.md`, `docs/protocol.md`).
- `pod check`: 0 allowed, 1 denied.
- `pod wait`: for one Pod its workload's exit code (128+N when killed by
  signal N, 0 for a clean stop, 125 when the Pod process died); for
  several 0 when all are 0, else 1; 124 when `--timeout` passed.
- `--json`: one JSON value (pretty-printed) for a command that answers
  once (`ls`, `tree`, `scope`, `check`, `wait`, `registry ls`); JSON
  Lines, one object per line, for a stream (`log`, `logs`, also with
  `--follow`). How a Pod ended is one object shape everywhere (`ls`,
  `wait`, and the MCP server's answers): `state` (`exited`, `killed`,
  `stopped`, `crashed`, `lost`; `running` while it runs) with
  `exit_code` for `exited` or `signal` (its number) for `killed`;
  the text output writes it `exited(3)`, `killed(SIGKILL)`. Times are
  milliseconds since the epoch in `timestamp_ms` (`log`, `logs`).
- Inside a workload (`POD_SOCKET` set), `pod wait`, `pod logs` and `pod
  log` (with `--follow` and `--tail` too) ask the Pod the workload runs in
  instead of reading the stores' `data/`, which an enforced workload
  cannot read; they reach that Pod and its descendants only
  (`auth.inspect_denied` otherwise). `pod rm` there asks that Pod to
  remove a stopped descendant (`auth.remove_denied` for any other).
";

/// The whole reference, as `docs/cli.md` must hold it.
pub fn reference() -> String {
    let mut out = String::from(PREAMBLE);
    let mut root = Cli::command();
    root.build();
    for sub in root.get_subcommands() {
        section(&mut out, sub, "pod");
    }
    out
}

fn section(out: &mut String, cmd: &clap::Command, parent: &str) {
    if cmd.is_hide_set() {
        return;
    }
    let path = format!("{parent} {}", cmd.get_name());
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|c| !c.is_hide_set()).collect();
    out.push_str(&format!("\n## `{path}`\n\n"));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&format!("{about}\n\n"));
    }
    if subs.is_empty() {
        let usage = cmd.clone().bin_name(&path).render_usage().to_string();
        out.push_str(&format!("```\n{}\n```\n", usage.trim_start_matches("Usage: ").trim()));
        let args: Vec<&clap::Arg> = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
            .collect();
        if !args.is_empty() {
            out.push('\n');
        }
        for arg in args {
            // A flag's default (false) says nothing; a value's does.
            let defaults: Vec<String> = match arg.get_action().takes_values() {
                true => arg.get_default_values().iter().map(|v| v.to_string_lossy().into_owned()).collect(),
                false => Vec::new(),
            };
            let default =
                if defaults.is_empty() { String::new() } else { format!(" (default: {})", defaults.join(" ")) };
            out.push_str(&format!(
                "- `{}`: {}{default}\n",
                shown(arg),
                arg.get_help().map(|h| h.to_string()).unwrap_or_default()
            ));
        }
    }
    for sub in subs {
        section(out, sub, &path);
    }
}

/// `--write PATH`, `-s, --signal SIG`, `NAME`, `-- CMD...`.
fn shown(arg: &clap::Arg) -> String {
    let value = arg
        .get_value_names()
        .map(|names| names.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| arg.get_id().to_string().to_uppercase());
    let short = arg.get_short().map_or(String::new(), |c| format!("-{c}, "));
    match arg.get_long() {
        Some(long) if arg.get_action().takes_values() => format!("{short}--{long} {value}"),
        Some(long) => format!("{short}--{long}"),
        None if arg.is_last_set() => format!("-- {value}..."),
        None => value,
    }
}
