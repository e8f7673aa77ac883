//! Bounded pickle opcode reader (data subset only).

use super::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    #[error("opcode {0:#04x} is not allowed")]
    ForbiddenOpcode(u8),
}

/// Finds where the pickle starting at `buf[0]` ends: `Ok(Some(n))` when
/// `buf[..n]` is a whole pickle (ending with STOP), `Ok(None)` when more
/// bytes are needed.
pub fn find_end(buf: &[u8], max_depth: usize, max_items: usize) -> Result<Option<usize>, PickleError> {
    todo!("{} {max_depth} {max_items}", buf.len())
}

/// Decodes one whole pickle.
pub fn decode(buf: &[u8], max_depth: usize, max_items: usize) -> Result<Value, PickleError> {
    todo!("{} {max_depth} {max_items}", buf.len())
}
