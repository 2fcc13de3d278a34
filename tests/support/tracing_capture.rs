//! What a `tracing` subscriber writes, captured as text for assertions.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The text a [`capture`] subscriber wrote so far.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A plain-text subscriber up to `level`, and what it writes. Install it
/// with `tracing::subscriber::set_default` or `with_default`.
pub fn capture(
    level: tracing::Level,
) -> (Captured, impl tracing::Subscriber + Send + Sync + 'static) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, subscriber)
}
