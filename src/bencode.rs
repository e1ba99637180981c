//! Bencode: a validating, non-recursive tokenizer that guards serde_bencode,
//! and a small writer.
//!
//! serde_bencode has no nesting limit and accepts non-canonical input, so
//! nothing from outside reaches it before [`validate`] has passed.

/// Builds bencoded bytes. The caller is responsible for writing dictionary
/// keys in sorted order.
#[derive(Default, Debug)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        self.buf.push(b'i');
        self.buf.extend_from_slice(v.to_string().as_bytes());
        self.buf.push(b'e');
        self
    }
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v.len().to_string().as_bytes());
        self.buf.push(b':');
        self.buf.extend_from_slice(v);
        self
    }
    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }
    pub fn list(&mut self) -> &mut Self {
        self.buf.push(b'l');
        self
    }
    pub fn dict(&mut self) -> &mut Self {
        self.buf.push(b'd');
        self
    }
    pub fn end(&mut self) -> &mut Self {
        self.buf.push(b'e');
        self
    }
    /// Append bytes that are already bencoded.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}
