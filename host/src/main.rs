//! The `cniscope` command line: parse, dispatch, and print an error once, with its exit code.
//! The commands are in `cli/`; what they orchestrate is in the library.

mod cli;

use clap::Parser;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CNISCOPE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log written to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = cli::dispatch(cli::Cli::parse()) {
        eprintln!("cniscope: {}", said_once(&e));
        std::process::exit(cli::exit_code(&e));
    }
}

/// The error and its causes, each said once: an error that already names its cause in its
/// own message (`path: No such file or directory`) is not followed by that cause again.
fn said_once(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
