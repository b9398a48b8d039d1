//! Where the commands' output goes: stdout, ending quietly when the reader has gone (`| head`),
//! and files replaced whole (written beside, then renamed), so a reader never sees half a
//! document.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// Writes `text` to stdout. A closed pipe ends the process quietly with the conventional
/// status (128 + SIGPIPE), as a shell tool does; other errors (a full disk) are errors.
pub fn print(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Replaces `path` with `text` (`sinks::replace_file`: written beside, then renamed).
pub fn replace_file(path: &Path, text: &str) -> Result<()> {
    cniscope::sinks::replace_file(path, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
