//! The sender's clock: how it waits for a message's due time.
//!
//! [`Pacing::Tick`] (the default, and what every recorded figure used)
//! sleeps with tokio's timers, whose resolution is a millisecond: the
//! messages of a millisecond leave together, R / 1000 at once (ten at
//! R = 10,000). The last of such a burst waits in the server behind the
//! others, which is latency the schedule (message n due at n / R seconds)
//! does not ask for; and the burst lets both sides batch for free, which
//! 1,000 independent clients would not give a server.
//! [`Pacing::Fine`] arms a timerfd (the kernel's high-resolution timers)
//! for each due time instead, so messages leave one by one, on schedule;
//! it costs the generator a wake-up per message.

use std::io;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use rustix::time::{
    ClockId, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec,
};
use tokio::io::unix::AsyncFd;

/// How the sender waits for a message's due time (`--pace`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pacing {
    /// tokio's timers: messages leave in 1 ms ticks.
    Tick,
    /// A timerfd per due time: messages leave one by one.
    Fine,
}

/// Wakes the sender at given times since the run's epoch.
pub enum Pacer {
    Tick { epoch: Instant },
    Fine(FineTimer),
}

impl Pacer {
    pub fn new(pacing: Pacing, epoch: Instant) -> io::Result<Pacer> {
        Ok(match pacing {
            Pacing::Tick => Pacer::Tick { epoch },
            Pacing::Fine => Pacer::Fine(FineTimer::new(epoch)?),
        })
    }

    /// Returns once `due_ns` after the epoch has passed (with
    /// [`Pacing::Tick`], at the next millisecond tick after it).
    pub async fn sleep_until(&self, due_ns: u64) -> io::Result<()> {
        match self {
            Pacer::Tick { epoch } => {
                tokio::time::sleep_until((*epoch + Duration::from_nanos(due_ns)).into()).await;
                Ok(())
            }
            Pacer::Fine(timer) => timer.sleep_until(due_ns).await,
        }
    }
}

/// A timerfd on `CLOCK_MONOTONIC`, armed for one due time at a time.
pub struct FineTimer {
    timer: AsyncFd<OwnedFd>,
    /// The run's epoch on `CLOCK_MONOTONIC` (the clock `Instant` reads).
    epoch_ns: u64,
}

impl FineTimer {
    fn new(epoch: Instant) -> io::Result<FineTimer> {
        let timer = rustix::time::timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )?;
        let now_ns = nanos(rustix::time::clock_gettime(ClockId::Monotonic));
        let since_epoch = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        // tokio deprecated its safe constructor because a registration must
        // not outlive its descriptor, which it cannot check in general (the
        // replacement is `unsafe`, which this project forbids). Here it
        // holds: the registration owns the descriptor.
        #[allow(deprecated)]
        let timer = AsyncFd::new(timer)?;
        Ok(FineTimer {
            timer,
            epoch_ns: now_ns.saturating_sub(since_epoch),
        })
    }

    async fn sleep_until(&self, due_ns: u64) -> io::Result<()> {
        let at = timespec(Duration::from_nanos(self.epoch_ns.saturating_add(due_ns)));
        let zero = timespec(Duration::ZERO);
        rustix::time::timerfd_settime(
            self.timer.get_ref(),
            TimerfdTimerFlags::ABSTIME,
            &Itimerspec {
                it_interval: zero,
                it_value: at,
            },
        )?;
        loop {
            let mut ready = self.timer.readable().await?;
            let mut expirations = [0u8; 8];
            match rustix::io::read(self.timer.get_ref(), &mut expirations) {
                Ok(_) => return Ok(()),
                Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
                Err(error) => return Err(error.into()),
            }
        }
    }
}

fn nanos(time: Timespec) -> u64 {
    (time.tv_sec as u64) * 1_000_000_000 + time.tv_nsec as u64
}

fn timespec(since_boot: Duration) -> Timespec {
    Timespec {
        tv_sec: since_boot.as_secs() as _,
        tv_nsec: since_boot.subsec_nanos() as _,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Due times a tenth of a millisecond apart: the fine timer never
    /// wakes early and wakes for them one by one, where tokio's timer wakes
    /// for ten at a time on its millisecond tick. (Counted as wakes at
    /// least 50 µs after the one before; a loaded machine may delay some
    /// wakes and bunch the late ones, so half is asked, not all.)
    #[tokio::test(flavor = "current_thread")]
    async fn the_fine_timer_wakes_for_each_due_time() {
        const STEPS: u64 = 200;
        let apart = |pacing| async move {
            let epoch = Instant::now();
            let pacer = Pacer::new(pacing, epoch).unwrap();
            let mut last = 0;
            let mut apart = 0;
            for n in 1..=STEPS {
                let due = 1_000_000 + n * 100_000;
                pacer.sleep_until(due).await.unwrap();
                let now = epoch.elapsed().as_nanos() as u64;
                assert!(now >= due, "{pacing:?} woke {} ns early", due - now);
                apart += u64::from(now - last >= 50_000);
                last = now;
            }
            apart
        };
        let fine = apart(Pacing::Fine).await;
        assert!(fine >= STEPS / 2, "fine: {fine} of {STEPS} wakes apart");
        let tick = apart(Pacing::Tick).await;
        assert!(
            tick < fine,
            "tick: {tick} of {STEPS} wakes apart, fine: {fine}"
        );
    }

    /// A due time already past returns at once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_past_due_time_returns_at_once() {
        let epoch = Instant::now() - Duration::from_secs(1);
        for pacing in [Pacing::Tick, Pacing::Fine] {
            let pacer = Pacer::new(pacing, epoch).unwrap();
            let started = Instant::now();
            pacer.sleep_until(1_000).await.unwrap();
            assert!(started.elapsed() < Duration::from_millis(100), "{pacing:?}");
        }
    }
}
