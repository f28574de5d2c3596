//! A `log` backend that keeps evloop's records for a test to read. A
//! process has one logger: a test binary using this holds one test.

use std::sync::Mutex;

static LINES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Keeps evloop's records (up to the max level set) in [`LINES`].
struct Capture;

impl log::Log for Capture {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.target().starts_with("evloop") && meta.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            LINES.lock().unwrap().push(record.args().to_string());
        }
    }

    fn flush(&self) {}
}

static CAPTURE: Capture = Capture;

/// Install the capture, keeping records up to `level`.
pub fn install(level: log::LevelFilter) {
    log::set_logger(&CAPTURE).unwrap();
    log::set_max_level(level);
}

/// The records kept since the last call.
pub fn take_lines() -> Vec<String> {
    std::mem::take(&mut *LINES.lock().unwrap())
}
