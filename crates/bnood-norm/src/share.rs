//! One batch normalised by several threads: each thread holds a share of the batch, and
//! the per-channel sums behind the batch statistics are added across the shares.

use std::sync::{Condvar, Mutex, MutexGuard};

use burn::tensor::Tensor;

/// One share of a batch that several threads normalise together in
/// [`BatchNorm::forward_channels_last`](crate::BatchNorm::forward_channels_last): each thread
/// passes its own blocks of the batch, and the per-channel sums behind the batch statistics
/// are added across the shares, so every share is normalised with the statistics of the
/// whole batch.
pub struct BatchShare<'a> {
    /// Blocks in the whole batch (the input holds this share's only).
    pub total_blocks: usize,
    /// Whether this share records the statistics on a
    /// [`StatsMode::Train`](crate::StatsMode::Train) tape; exactly one share of a batch
    /// should.
    pub records: bool,
    /// Adds a `[1, 1, C]` partial sum over every share of the batch (e.g.
    /// [`ShareExchange::all_sum`]); every share must call it the same number of times, in the
    /// same order.
    pub all_sum: &'a dyn Fn(Tensor<3>) -> Tensor<3>,
}

/// A rendezvous where `shares` threads add up their partial sums, round after round. The
/// sum is taken in share order, so it does not depend on which thread arrives first.
///
/// If a thread gives up (returns an error or panics) while holding a [`ShareGuard`] it has
/// not finished, the others stop waiting and panic instead of waiting forever for its
/// contribution.
#[derive(Debug)]
pub struct ShareExchange {
    shares: usize,
    state: Mutex<Round>,
    arrived: Condvar,
}

#[derive(Debug, Default)]
struct Round {
    number: u64,
    partials: Vec<Option<Tensor<3>>>,
    total: Option<Tensor<3>>,
    failed: bool,
}

impl ShareExchange {
    /// An exchange for `shares` threads (at least 1).
    pub fn new(shares: usize) -> Self {
        Self {
            shares: shares.max(1),
            state: Mutex::new(Round {
                partials: vec![None; shares.max(1)],
                ..Round::default()
            }),
            arrived: Condvar::new(),
        }
    }

    /// Number of shares.
    pub fn shares(&self) -> usize {
        self.shares
    }

    /// The sum of every share's `partial` of this round (share 0 first). Blocks until
    /// every share has arrived.
    ///
    /// # Panics
    /// If another share's thread gave up (see [`ShareGuard`]).
    pub fn all_sum(&self, share: usize, partial: Tensor<3>) -> Tensor<3> {
        let mut round = self.lock();
        round.partials[share] = Some(partial);
        if round.partials.iter().all(Option::is_some) {
            let total = round
                .partials
                .iter_mut()
                .map(|p| p.take().expect("every share arrived"))
                .reduce(|sum, p| sum + p)
                .expect("at least one share");
            round.total = Some(total.clone());
            round.number += 1;
            self.arrived.notify_all();
            return total;
        }
        // The total of this round stays until the next round completes, which needs this
        // thread's contribution, so it is still there when this thread wakes up.
        let number = round.number;
        while round.number == number {
            assert!(!round.failed, "another thread of the batch failed");
            round = self.arrived.wait(round).unwrap_or_else(|e| e.into_inner());
        }
        round.total.clone().expect("a completed round has a total")
    }

    /// A guard for one share's thread: dropped without [`ShareGuard::finish`] (an early
    /// error return or a panic), it wakes the other shares so that they panic instead of
    /// waiting forever.
    pub fn guard(&self) -> ShareGuard<'_> {
        ShareGuard {
            exchange: self,
            finished: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A poisoned lock only means another share panicked; `failed` says so.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`ShareExchange::guard`].
#[derive(Debug)]
pub struct ShareGuard<'a> {
    exchange: &'a ShareExchange,
    finished: bool,
}

impl ShareGuard<'_> {
    /// This share is done with the exchange.
    pub fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for ShareGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.exchange.lock().failed = true;
            self.exchange.arrived.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::ShareExchange;

    #[test]
    fn all_sum_adds_every_share_in_every_round() {
        let device = Device::flex();
        let exchange = ShareExchange::new(3);
        let totals: Vec<Vec<f32>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..3)
                .map(|share| {
                    let (exchange, device) = (&exchange, device.clone());
                    s.spawn(move || {
                        (0..4)
                            .map(|round| {
                                let value = (10 * round + share) as f32;
                                let partial = Tensor::<3>::full([1, 1, 2], value, &device);
                                let total = exchange.all_sum(share, partial);
                                total.into_data().iter::<f32>().next().expect("a value")
                            })
                            .collect()
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("no panic"))
                .collect()
        });
        for share in totals {
            assert_eq!(share, vec![3.0, 33.0, 63.0, 93.0]);
        }
    }

    #[test]
    fn a_share_that_gives_up_makes_the_others_panic_instead_of_waiting() {
        let device = Device::flex();
        let exchange = ShareExchange::new(2);
        let results: Vec<bool> = std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                let guard = exchange.guard();
                exchange.all_sum(0, Tensor::<3>::zeros([1, 1, 1], &device));
                guard.finish();
            });
            let failing = s.spawn(|| {
                let _guard = exchange.guard();
                // Returns early (an error) without contributing.
            });
            vec![waiting.join().is_err(), failing.join().is_err()]
        });
        assert_eq!(results, vec![true, false]);
    }
}
