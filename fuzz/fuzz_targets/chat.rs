//! The chat state machine under random command sequences from several users.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter_fuzz::chat_session::check_session;

fuzz_target!(|data: &[u8]| check_session(data));
