//! The settings as they are now: what a reload (SIGHUP) changes while the
//! server runs.
//!
//! The hub owns its own copy and hears of a change as a message
//! ([`crate::hub::HubEvent::Reload`]), so its hot path reads a plain field.
//! Everything else (the accept loops, each connection's reader) looks here:
//! accept loops when a connection arrives, readers once per read, through a
//! generation number, so that a reader that finds it unchanged (nearly
//! always) touches one atomic and no lock.
//!
//! Which settings can change live is [`Config::reloaded`]'s business.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::config::Config;

/// The current settings and how many times they changed.
#[derive(Debug)]
pub struct LiveConfig {
    generation: AtomicU64,
    current: RwLock<Arc<Config>>,
}

impl LiveConfig {
    pub fn new(config: Arc<Config>) -> Self {
        LiveConfig {
            generation: AtomicU64::new(0),
            current: RwLock::new(config),
        }
    }

    /// The settings now. (A lock and a reference count: for a
    /// connection's start, not for each message.)
    pub fn get(&self) -> Arc<Config> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes every time [`LiveConfig::set`] is called.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Publishes new settings.
    pub fn set(&self, config: Arc<Config>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A copy of the settings now that knows when it is out of date.
    pub fn track(&self) -> Tracked {
        // Generation first: a change in between is seen at the next check.
        let generation = self.generation();
        Tracked {
            generation,
            config: self.get(),
        }
    }
}

/// A reader's copy of the settings.
#[derive(Debug, Clone)]
pub struct Tracked {
    generation: u64,
    pub config: Arc<Config>,
}

impl Tracked {
    /// Takes the new settings if they changed since the last look; true
    /// when they did.
    pub fn refresh(&mut self, live: &LiveConfig) -> bool {
        if live.generation() == self.generation {
            return false;
        }
        *self = live.track();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracked_copy_sees_each_change_once() {
        let live = LiveConfig::new(Arc::new(Config::default()));
        let mut tracked = live.track();
        assert!(!tracked.refresh(&live));
        live.set(Arc::new(Config {
            rate_limit: 3,
            ..Config::default()
        }));
        assert!(tracked.refresh(&live));
        assert_eq!(tracked.config.rate_limit, 3);
        assert!(!tracked.refresh(&live));
    }
}
