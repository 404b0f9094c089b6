//! A wake-up at an exact `CLOCK_MONOTONIC` instant, through a timerfd in the
//! tokio reactor. tokio's own timers round every deadline up to the next
//! millisecond tick, so a 10 ms advert would leave up to a millisecond late;
//! a timerfd fires within microseconds of the deadline, which keeps adverts
//! on time and takeovers exact.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, RawFd},
};

use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::unix::AsyncFd;

/// The timerfd, as the reactor needs it (nix's type only offers `AsFd`).
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// One re-armable deadline on the monotonic clock.
pub struct DeadlineTimer {
    fd: AsyncFd<Fd>,
}

impl DeadlineTimer {
    /// Must be called inside the tokio runtime.
    pub fn new() -> io::Result<Self> {
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        // SAFETY: the timerfd is owned by the AsyncFd and keeps returning the
        // same descriptor until the AsyncFd drops it.
        let fd = unsafe { AsyncFd::register(Fd(timer)) }.map_err(|e| e.into_parts().1)?;
        Ok(Self { fd })
    }

    /// Arms the timer for `deadline_ns` (`CLOCK_MONOTONIC`; a deadline in
    /// the past fires at once), or disarms it.
    pub fn set(&self, deadline_ns: Option<u64>) -> io::Result<()> {
        let timer = &self.fd.get_ref().0;
        match deadline_ns {
            None => timer.unset(),
            Some(deadline) => {
                // An all-zero expiration would disarm the timer: 1 ns is the past.
                let at = deadline.max(1);
                let spec = TimeSpec::new(
                    i64::try_from(at / 1_000_000_000).unwrap_or(i64::MAX),
                    (at % 1_000_000_000) as i64,
                );
                timer.set(
                    Expiration::OneShot(spec),
                    TimerSetTimeFlags::TFD_TIMER_ABSTIME,
                )
            }
        }
        .map_err(io::Error::from)
    }

    /// Resolves once the armed deadline has passed. Cancel-safe: dropping the
    /// future loses nothing (the expiry stays readable until waited for).
    pub async fn expired(&self) -> io::Result<()> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready.try_io(|fd| {
                let mut count = [0u8; 8];
                nix::unistd::read(fd.get_ref().0.as_fd(), &mut count)
                    .map(drop)
                    .map_err(io::Error::from)
            }) {
                Ok(result) => return result,
                Err(_would_block) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn monotonic_ns() -> u64 {
        let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
        now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
    }

    #[tokio::test]
    async fn fires_at_the_deadline_not_at_the_next_millisecond() {
        let timer = DeadlineTimer::new().unwrap();
        let mut worst = 0;
        for _ in 0..20 {
            // Deadlines between milliseconds, where tokio's own timer would
            // round up.
            let deadline = monotonic_ns() + 2_300_000;
            timer.set(Some(deadline)).unwrap();
            timer.expired().await.unwrap();
            let now = monotonic_ns();
            assert!(now >= deadline, "never early");
            worst = worst.max(now - deadline);
        }
        // Generous for a loaded CI machine; the point is sub-tick precision
        // on the typical run, checked by the median in the benchmark.
        assert!(worst < 50_000_000, "worst lateness {worst} ns");
    }

    #[tokio::test]
    async fn a_past_deadline_fires_at_once_and_disarming_never_fires() {
        let timer = DeadlineTimer::new().unwrap();
        timer.set(Some(1)).unwrap();
        tokio::time::timeout(Duration::from_secs(1), timer.expired())
            .await
            .expect("a deadline in the past fires at once")
            .unwrap();
        timer.set(Some(monotonic_ns() + 1_000_000)).unwrap();
        timer.set(None).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), timer.expired())
                .await
                .is_err(),
            "a disarmed timer does not fire"
        );
    }
}
