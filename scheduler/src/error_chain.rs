//! One line from an error and its sources ("transport error: connection refused"), for
//! messages about a peer that could not be reached: tonic's top-level error alone says little.

/// `e` and each of its sources, joined with ": ".
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
