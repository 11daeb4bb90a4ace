//! Reading manifests from files, directories and stdin: the inputs and the
//! position-keeping YAML reader shared by `probity lint`, `probity pin` and
//! the command that prints the backstop.

mod fast;
pub mod input;
pub mod yaml;

pub use input::{Input, Unreadable, collect};
pub use yaml::{Document, Pos, SyntaxError, read_stream};
