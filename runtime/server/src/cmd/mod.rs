//! One module per subcommand.

pub mod bench;
pub mod encrypt;
pub mod inspect;
pub mod keygen;
pub mod model_file;
pub mod models;
pub mod run;
pub mod seal;
pub mod serve;
