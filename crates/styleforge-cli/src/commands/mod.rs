//! One module per subcommand: argument parsing and glue over the library.

pub mod bench;
pub mod choices;
pub mod convert;
pub mod demo;
pub mod device;
pub mod eval;
pub mod generate;
pub mod model_source;
pub mod pretrain;
pub mod protocol;
pub mod sampling;
pub mod selftest;
pub mod studio;
pub mod stylize;
pub mod tokenize;
pub mod toy;
pub mod train;
