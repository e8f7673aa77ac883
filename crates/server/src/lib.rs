//! natter server
