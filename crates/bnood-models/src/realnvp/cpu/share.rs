//! One batch normalised by several threads. The batch is cut into a fixed number of
//! *shares*; each thread holds a run of consecutive shares. At every BatchNorm the
//! per-channel partial sums are taken per share and added in share order, so the sums —
//! and the scores — do not depend on how many threads ran the shares.

use std::ops::Range;
use std::sync::{Condvar, Mutex, MutexGuard};

use burn::tensor::Tensor;

/// The shares of a batch that one thread holds, and where their partial sums meet those of
/// the other threads.
pub(crate) struct ShareSet<'a> {
    /// Chunks of each share this thread holds, in share order (each at least 1).
    chunks_per_share: Vec<usize>,
    /// Every share's partial sums, when other threads hold the remaining shares.
    exchange: Option<Exchange<'a>>,
}

struct Exchange<'a> {
    exchange: &'a ShareExchange,
    /// Index of this thread's first share.
    first_share: usize,
    /// Blocks in the whole batch (this thread holds some of them only).
    total_blocks: usize,
}

impl<'a> ShareSet<'a> {
    /// Every share of the batch, held by one thread: `chunks_per_share[s]` chunks of share
    /// `s` (each at least 1).
    pub(crate) fn all(chunks_per_share: Vec<usize>) -> Self {
        Self {
            chunks_per_share,
            exchange: None,
        }
    }

    /// Shares `first_share..first_share + chunks_per_share.len()` of a batch of
    /// `total_blocks` blocks, whose other shares other threads hold; their partial sums
    /// meet at `exchange`.
    pub(crate) fn part(
        exchange: &'a ShareExchange,
        first_share: usize,
        chunks_per_share: Vec<usize>,
        total_blocks: usize,
    ) -> Self {
        Self {
            chunks_per_share,
            exchange: Some(Exchange {
                exchange,
                first_share,
                total_blocks,
            }),
        }
    }

    /// Blocks in the whole batch, given this thread's `local_blocks`.
    pub(crate) fn total_blocks(&self, local_blocks: usize) -> usize {
        self.exchange
            .as_ref()
            .map_or(local_blocks, |e| e.total_blocks)
    }

    /// Whether this thread records the batch's statistics on a `Train` tape: exactly one
    /// thread does, the one holding share 0.
    pub(crate) fn records(&self) -> bool {
        self.exchange.as_ref().is_none_or(|e| e.first_share == 0)
    }

    /// The sum over the whole batch of one `[1, 1, C]` partial per chunk of this thread
    /// (`partials` in chunk order): each share's partials are added in chunk order, then
    /// the shares in share order. Every thread must call this the same number of times.
    ///
    /// # Panics
    /// If another thread of the batch gave up (see [`ShareExchange::guard`]).
    pub(crate) fn batch_sum(&self, partials: Vec<Tensor<3>>) -> Tensor<3> {
        let mut partials = partials.into_iter();
        let per_share: Vec<Tensor<3>> = self
            .chunks_per_share
            .iter()
            .map(|&chunks| {
                partials
                    .by_ref()
                    .take(chunks)
                    .reduce(|sum, p| sum + p)
                    .expect("every share holds at least one chunk")
            })
            .collect();
        match &self.exchange {
            Some(e) => e.exchange.all_sum(e.first_share, per_share),
            None => add_in_order(per_share),
        }
    }
}

fn add_in_order(partials: Vec<Tensor<3>>) -> Tensor<3> {
    partials
        .into_iter()
        .reduce(|sum, p| sum + p)
        .expect("at least one share")
}

/// `shares` runs of consecutive shares, as equal as possible, one per thread.
pub(crate) fn runs(shares: usize, threads: usize) -> Vec<Range<usize>> {
    (0..threads)
        .map(|t| t * shares / threads..(t + 1) * shares / threads)
        .collect()
}

/// A rendezvous where the threads of a batch add up their shares' partial sums, round
/// after round. The sum is taken in share order, so it does not depend on which thread
/// arrives first nor on how the shares are spread over the threads.
///
/// If a thread gives up (returns an error or panics) while holding a [`ShareGuard`] it has
/// not finished, the others stop waiting and panic instead of waiting forever for its
/// contribution.
#[derive(Debug)]
pub(crate) struct ShareExchange {
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
    /// An exchange for `shares` shares (at least 1).
    pub(crate) fn new(shares: usize) -> Self {
        Self {
            state: Mutex::new(Round {
                partials: vec![None; shares.max(1)],
                ..Round::default()
            }),
            arrived: Condvar::new(),
        }
    }

    /// The sum of every share's partial of this round (share 0 first), given this thread's
    /// `partials` of shares `first_share..`. Blocks until every share has arrived.
    ///
    /// # Panics
    /// If another thread gave up (see [`ShareGuard`]).
    pub(crate) fn all_sum(&self, first_share: usize, partials: Vec<Tensor<3>>) -> Tensor<3> {
        let mut round = self.lock();
        for (slot, partial) in round.partials[first_share..].iter_mut().zip(partials) {
            *slot = Some(partial);
        }
        if round.partials.iter().all(Option::is_some) {
            let total = add_in_order(
                round
                    .partials
                    .iter_mut()
                    .map(|p| p.take().expect("every share arrived"))
                    .collect(),
            );
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

    /// A guard for one thread: dropped without [`ShareGuard::finish`] (an early error return
    /// or a panic), it wakes the other threads so that they panic instead of waiting forever.
    pub(crate) fn guard(&self) -> ShareGuard<'_> {
        ShareGuard {
            exchange: self,
            finished: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Round> {
        // A poisoned lock only means another thread panicked; `failed` says so.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// See [`ShareExchange::guard`].
#[derive(Debug)]
pub(crate) struct ShareGuard<'a> {
    exchange: &'a ShareExchange,
    finished: bool,
}

impl ShareGuard<'_> {
    /// This thread is done with the exchange.
    pub(crate) fn finish(mut self) {
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

    use super::{ShareExchange, ShareSet, runs};

    fn value(t: Tensor<3>) -> f32 {
        t.into_data().iter::<f32>().next().expect("a value")
    }

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
                                let v = (10 * round + share) as f32;
                                let partial = Tensor::<3>::full([1, 1, 2], v, &device);
                                value(exchange.all_sum(share, vec![partial]))
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
    fn a_thread_may_hold_several_shares() {
        let device = Device::flex();
        let exchange = ShareExchange::new(3);
        let partial = |v: f32| Tensor::<3>::full([1, 1, 1], v, &device);
        let totals: Vec<f32> = std::thread::scope(|s| {
            let first = s.spawn(|| {
                let set = ShareSet::part(&exchange, 0, vec![2, 1], 9);
                value(set.batch_sum(vec![partial(1.0), partial(2.0), partial(4.0)]))
            });
            let second = s.spawn(|| {
                let set = ShareSet::part(&exchange, 2, vec![1], 9);
                assert!(!set.records(), "only the holder of share 0 records");
                assert_eq!(set.total_blocks(3), 9);
                value(set.batch_sum(vec![partial(8.0)]))
            });
            [first, second]
                .into_iter()
                .map(|t| t.join().expect("no panic"))
                .collect()
        });
        assert_eq!(totals, vec![15.0, 15.0]);
        let whole = ShareSet::all(vec![2, 2]);
        assert!(whole.records());
        assert_eq!(whole.total_blocks(4), 4);
        let parts = [1.0, 2.0, 4.0, 8.0].map(partial).to_vec();
        assert_eq!(value(whole.batch_sum(parts)), 15.0);
    }

    #[test]
    fn runs_cover_every_share_once_in_order() {
        assert_eq!(runs(2, 1), vec![0..2]);
        assert_eq!(runs(2, 2), vec![0..1, 1..2]);
        assert_eq!(runs(5, 2), vec![0..2, 2..5]);
    }

    #[test]
    fn a_thread_that_gives_up_makes_the_others_panic_instead_of_waiting() {
        let device = Device::flex();
        let exchange = ShareExchange::new(2);
        let results: Vec<bool> = std::thread::scope(|s| {
            let waiting = s.spawn(|| {
                let guard = exchange.guard();
                exchange.all_sum(0, vec![Tensor::<3>::zeros([1, 1, 1], &device)]);
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
