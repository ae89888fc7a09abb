//! How many decisions a round may hand to the kernel: the look-ahead window.
//!
//! Both kernel backends describe what they have in hand with an [`Occupancy`]
//! and the loop sizes every round with [`Occupancy::budget`], so the real
//! path and the simulator share one rule.
//!
//! The window: the kernel side holds at most `nr_cpus` tasks the plugin
//! already chose (running, or dispatched and waiting for a CPU), plus up to
//! `queue_ahead` more per CPU taken from a backlog. Those extra tasks wait
//! in the kernel in the plugin's key order, so a CPU that frees up starts
//! the next one without a host round trip. They are the plugin's best picks
//! only while it holds many more than it hands over: beyond one task per
//! CPU, the plugin keeps at least as many as go ahead. Otherwise a task whose slice
//! just ended (on its way back through the host) would always lose the CPU
//! to whatever waits in the kernel, and with few tasks the kernel's queue,
//! not the plugin, would decide who runs (weights, priorities).

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

    /// How many more decisions fit in the window while the plugin holds
    /// `backlog` tasks; never fewer than there are idle CPUs: tasks
    /// committed earlier may be waiting for a CPU they are pinned to, or one
    /// an RT task holds, and must not keep a free CPU without work.
    pub fn budget(&self, nr_cpus: u32, queue_ahead: u64, backlog: u64) -> u64 {
        let cpus = u64::from(nr_cpus);
        let ahead = cpus
            .saturating_mul(queue_ahead)
            .min(backlog.saturating_sub(cpus) / 2);
        let capacity = cpus.saturating_add(ahead);
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
        assert_eq!(o.budget(4, 0, 100), 1);
        assert_eq!(o.budget(4, 1, 100), 5);
        assert_eq!(o.budget(2, 0, 100), 0);
    }

    #[test]
    fn the_window_goes_ahead_only_from_a_backlog() {
        let o = Occupancy::new(2, 0, 0, 0, 0);
        // Two tasks in hand on two CPUs: nothing ahead, the plugin keeps its choice.
        assert_eq!(o.budget(2, 1, 2), 0);
        // Three, four: what goes ahead would be the plugin's last picks.
        assert_eq!(o.budget(2, 1, 3), 0);
        assert_eq!(o.budget(2, 1, 4), 1);
        // A large backlog: the full `queue_ahead` per CPU.
        assert_eq!(o.budget(2, 3, 1000), 6);
    }

    #[test]
    fn a_kernel_that_read_more_than_was_sent_counts_nothing_unsent() {
        assert_eq!(Occupancy::new(0, 0, 3, 10, 0).unsent, 0);
    }

    #[test]
    fn an_idle_cpu_always_gets_a_decision() {
        // Full window, but two tasks in it wait for a busy CPU they are pinned to.
        let o = Occupancy::new(2, 2, 0, 0, 1);
        assert_eq!(o.budget(4, 0, 0), 1);
    }

    #[test]
    fn huge_settings_saturate_instead_of_wrapping() {
        let b = Occupancy::default().budget(u32::MAX, u64::MAX, u64::MAX);
        assert_eq!(
            b,
            u64::from(u32::MAX) + (u64::MAX - u64::from(u32::MAX)) / 2
        );
    }
}
