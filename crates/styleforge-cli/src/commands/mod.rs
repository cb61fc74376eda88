//! One module per subcommand: argument parsing and glue over the library.

pub mod bench;
pub mod tokenize;
