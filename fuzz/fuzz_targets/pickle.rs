//! The pickle reader, with serde-pickle as a differential oracle.
#![no_main]

use libfuzzer_sys::fuzz_target;
use natter_fuzz::pickle_oracle::check_pickle;

fuzz_target!(|data: &[u8]| check_pickle(data));
