//! What a configuration that cannot be used reports: every problem, once, as a list.

/// The config could not be loaded: every problem found, each naming the key and where it
/// came from. Printed once, as a list.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(origin, problems))]
pub struct ConfigError {
    /// The file (or "the built-in dev config").
    pub origin: String,
    /// One line per problem.
    pub problems: Vec<String>,
}

fn render_problems(origin: &str, problems: &[String]) -> String {
    match problems {
        [one] => format!("config {origin}: {one}"),
        many => {
            let mut out = format!("config {origin}: {} problems:", many.len());
            for p in many {
                out.push_str("\n  - ");
                out.push_str(p);
            }
            out
        }
    }
}
