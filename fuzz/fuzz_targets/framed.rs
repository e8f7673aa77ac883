//! The framed decoder: any bytes, cut anywhere, decode as when fed whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter_fuzz::decoders::check_stream;
use natter_proto::Encoding;

fuzz_target!(|data: &[u8]| check_stream(Encoding::Framed, data));
