//! natter client
