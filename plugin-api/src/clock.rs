//! [`VirtualClock`]: virtual time's "now" for plugins that order by vtime.

/// How many of the latest records [`VirtualClock::now`] looks at.
const WINDOW: usize = 16;

/// Virtual time's "now" for a plugin that orders tasks by virtual time,
/// kept from two events: a task handed out in order, and a record showing
/// that a task handed out at some vtime has run.
///
/// Two readings, for two uses:
///
/// - [`frontier`](Self::frontier): the highest vtime handed out in order.
///   A new task (a fork) starts here, behind every task already queued.
/// - [`now`](Self::now): the lowest vtime that any of the latest 16 tasks
///   known to have run started from, never past the frontier and never
///   going back: the pack's trailing edge. A waking sleeper's credit counts
///   from here.
///
/// They differ because decisions are handed out ahead, and not all in
/// order: up to a look-ahead window of tasks wait in the kernel's queue,
/// keyed, before they run, and a task alone in the pool is handed out
/// whatever its vtime. Measured in the VM with four CPU hogs on two CPUs:
/// one hog ran 40 ms of vtime ahead of the other three for the whole run,
/// handed out last each round. A sleeper placed against it ranked after
/// the hogs that ran, so the kernel's wake-up preemption rule (which
/// compares keys) refused it one wake-up in seven, and it waited for a
/// slice instead.
///
/// ```
/// use plugin_api::VirtualClock;
///
/// let mut clock = VirtualClock::default();
/// // Hogs handed out at vtime 10, 12 and 50 ms; all three have run.
/// for v in [10, 12, 50] {
///     clock.handed_out(v * 1_000_000);
/// }
/// for v in [10, 50, 12] {
///     clock.ran_from(v * 1_000_000);
/// }
/// assert_eq!(clock.frontier(), 50_000_000);
/// // The trailing edge, not the hog far ahead.
/// assert_eq!(clock.now(), 10_000_000);
/// ```
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VirtualClock {
    frontier: u64,
    now: u64,
    /// The latest records' vtimes, a ring; 0 marks an empty slot.
    recent: [u64; WINDOW],
    next: usize,
}

impl VirtualClock {
    /// A task was handed out, in order, at `vtime`. Not for a task taken
    /// out of order (aged): its vtime says nothing about the others'.
    pub fn handed_out(&mut self, vtime: u64) {
        self.frontier = self.frontier.max(vtime);
    }

    /// A record shows that a task handed out at `vtime` has run since.
    pub fn ran_from(&mut self, vtime: u64) {
        self.recent[self.next] = vtime.min(self.frontier).max(1);
        self.next = (self.next + 1) % WINDOW;
        let edge = self.recent.iter().filter(|&&v| v > 0).min().copied();
        self.now = self.now.max(edge.unwrap_or(0));
    }

    /// The highest vtime handed out in order: where a new task starts.
    pub fn frontier(&self) -> u64 {
        self.frontier
    }

    /// The pack's trailing edge: where a waking sleeper's credit counts
    /// from.
    pub fn now(&self) -> u64 {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_trails_the_frontier_and_never_goes_back() {
        let mut c = VirtualClock::default();
        c.handed_out(30);
        c.ran_from(20);
        c.ran_from(40);
        assert_eq!((c.frontier(), c.now()), (30, 20));
        // A sleeper's old vtime does not take it back.
        c.ran_from(5);
        assert_eq!(c.now(), 20);
        // Once the window has moved past the old vtimes, it follows.
        for _ in 0..WINDOW {
            c.ran_from(25);
        }
        assert_eq!(c.now(), 25);
    }
}
