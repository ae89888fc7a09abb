//! How many decisions a round may hand to the kernel: the look-ahead window.
//!
//! Both kernel backends describe what they have in hand with an [`Occupancy`]
//! and the loop sizes every round with [`Occupancy::budget`], so the real
//! path and the simulator share one rule.
//!
//! The window: the kernel side holds at most `nr_cpus × (1 + queue_ahead)`
//! tasks the plugin already chose (running, or dispatched and waiting for a
//! CPU). With `queue_ahead = 0` every choice stays with the plugin until a
//! CPU can start it, so a task the plugin ranks higher that arrives later
//! still goes first; each extra step lets the kernel keep CPUs busy while the
//! host is on its way, at the price of that many committed choices per CPU.

/// What the kernel side has in hand, by where it is, and how many CPUs idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Occupancy {
    /// Tasks running on a CPU (the host's own threads excluded).
    pub running: u64,
    /// Tasks inserted into a dispatch queue on the host's word, not yet running.
    pub inflight: u64,
    /// Decisions written by the host and not yet read by the kernel side.
    pub unsent: u64,
    /// CPUs idle right now.
    pub idle_cpus: u64,
}

impl Occupancy {
    /// From the host's count of decisions written and the kernel's count of
    /// decisions read (`drained`); a kernel that read more (a restart) counts 0.
    pub fn new(running: u64, inflight: u64, submitted: u64, drained: u64, idle_cpus: u64) -> Self {
        Occupancy {
            running,
            inflight,
            unsent: submitted.saturating_sub(drained),
            idle_cpus,
        }
    }

    /// All tasks the kernel side has in hand.
    pub fn total(&self) -> u64 {
        self.running + self.inflight + self.unsent
    }

    /// How many more decisions fit in the window; never fewer than there
    /// are idle CPUs: tasks committed earlier may be waiting for a CPU they
    /// are pinned to, or one an RT task holds, and must not keep a free CPU
    /// without work.
    pub fn budget(&self, nr_cpus: u32, queue_ahead: u64) -> u64 {
        let capacity = u64::from(nr_cpus).saturating_mul(queue_ahead.saturating_add(1));
        capacity.saturating_sub(self.total()).max(self.idle_cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_in_hand_counts_against_the_window() {
        let o = Occupancy::new(1, 1, 5, 4, 0);
        assert_eq!(o.total(), 3);
        assert_eq!(o.budget(4, 0), 1);
        assert_eq!(o.budget(4, 1), 5);
        assert_eq!(o.budget(2, 0), 0);
    }

    #[test]
    fn a_kernel_that_read_more_than_was_sent_counts_nothing_unsent() {
        assert_eq!(Occupancy::new(0, 0, 3, 10, 0).unsent, 0);
    }

    #[test]
    fn an_idle_cpu_always_gets_a_decision() {
        // Full window, but two tasks in it wait for a busy CPU they are pinned to.
        let o = Occupancy::new(2, 2, 0, 0, 1);
        assert_eq!(o.budget(4, 0), 1);
    }

    #[test]
    fn huge_settings_saturate_instead_of_wrapping() {
        assert_eq!(Occupancy::default().budget(u32::MAX, u64::MAX), u64::MAX);
    }
}
