//! Model arguments (`--model`, `--clip`) resolved through
//! [`styleforge::models::source`]: a folder, a single file or a Hub name.

use std::path::Path;

use anyhow::Result;
use styleforge::models::source::{self, LocalModel, ResolveOptions};
use styleforge::models::ModelError;

/// Resolves `arg` with `opts`, download progress bars on a terminal. A missing path or a
/// wrong kind of model is reported as it is (the error names the path and what is
/// accepted); a failed Hub fetch says which model it was.
pub fn resolve(arg: &Path, opts: ResolveOptions) -> Result<LocalModel> {
    let opts = opts.with_progress(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    source::resolve(arg, &opts).map_err(|e| match e {
        ModelError::SourceNotFound { .. } | ModelError::SourceKind { .. } => e.into(),
        other => {
            anyhow::Error::new(other).context(format!("cannot get the Hub model {}", arg.display()))
        }
    })
}
