//! Records handed to librdkafka a batch at a time: [`Staged`] collects the encoded records of
//! an input batch, and [`Producer::enqueue`] gives each topic's records to
//! `rd_kafka_produce_batch` in one call, on a topic handle kept for the producer's life.
//!
//! Why not the rdkafka crate's `send` (`rd_kafka_producev`) per record: for every record it
//! copies the topic name into a new C string, librdkafka looks the topic up by that name and
//! takes its lock, and reads the clock twice (the enqueue time and the message timestamp). On
//! the forward → Kafka bench (200-byte records) the clock reads alone were 5.7% of the CPU.
//! `rd_kafka_produce_batch` takes the topic handle, locks the topic once and reads the clock
//! once per call. Everything else is as with `send`: the same partitioner (the producer's
//! `partitioner` setting), the payload and key copied (`RD_KAFKA_MSG_F_COPY`), the message
//! timestamp the time it was handed over, and each message's opaque is its record's
//! [`Tracker`], which the producer's polling thread hands back to the delivery callback exactly
//! as for `send`.
//!
//! Records librdkafka does not take (its local queue is full, or an error about the record or
//! topic) go through [`super::produce`] one at a time, which waits for room, retries or gives
//! up as it does for every record; the rest of the batch then goes on in one call again.

use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::ops::Range;
use std::ptr::NonNull;
use std::sync::Arc;

use rdkafka::bindings as rdsys;
use rdkafka::producer::{Producer as _, ThreadedProducer};
use rdkafka::IntoOpaque;

use super::producer::{KafkaContext, Shared};
use crate::sink::settle::Tracker;

const NO_ERROR: rdsys::rd_kafka_resp_err_t = rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;

/// `RD_KAFKA_PARTITION_UA` (a C macro the bindings leave out): no partition chosen, the
/// producer's partitioner picks one per message, as `send` without a partition does.
const PARTITION_UA: i32 = -1;

/// Topic handles kept at most: a sink with `dynamic_topic` may see many topics; past this
/// many, the handles are dropped and made again as records come (librdkafka keeps its own
/// topic state either way).
const MAX_TOPIC_HANDLES: usize = 256;

/// Bytes of staged payloads (and keys) kept between batches: a batch of 200-byte records from
/// a forward chunk fits many times over, and one unusually large batch is not held for good.
const STAGED_KEEP_BYTES: usize = 1 << 20;

/// The librdkafka producer and the topic handles made on it.
///
/// The handles are declared first so that they are dropped first: librdkafka requires every
/// topic handle to be destroyed before its client is.
pub struct Producer {
    topics: TopicHandles,
    inner: ThreadedProducer<KafkaContext>,
}

impl Producer {
    pub fn new(inner: ThreadedProducer<KafkaContext>) -> Producer {
        Producer {
            topics: TopicHandles::default(),
            inner,
        }
    }

    /// The rdkafka producer, for single records, flushing and the client.
    pub fn inner(&self) -> &ThreadedProducer<KafkaContext> {
        &self.inner
    }

    /// Hands every staged record to librdkafka, topic by topic (each topic's records in their
    /// order), and empties `staged`. Waits while librdkafka's queue is full.
    pub async fn enqueue(&mut self, staged: &mut Staged, shared: &Shared, queue_full_retries: u32) {
        let Producer { topics, inner } = self;
        for topic in 0..staged.topics.len() {
            let mut outgoing = Outgoing::new(staged, topic);
            let name = staged.topics[topic].as_str();
            // Without a handle (librdkafka refused the topic name), record by record: the
            // one-record path reports why each is refused.
            let handle = topics.get(inner, name);
            while handle.is_none_or(|handle| outgoing.produce_batch(handle)) {
                // A record librdkafka did not take goes through the one-record path, which
                // waits for room, retries or gives up; the rest then go on together again.
                let Some((index, tracker)) = outgoing.take_refused() else {
                    break;
                };
                let record = &staged.records[index];
                super::produce(
                    inner,
                    shared,
                    queue_full_retries,
                    name,
                    staged.key(record),
                    staged.payload(record),
                    tracker,
                )
                .await;
            }
        }
        staged.clear();
    }
}

/// Topic handles by name.
#[derive(Default)]
struct TopicHandles {
    by_name: HashMap<String, TopicHandle>,
}

impl TopicHandles {
    /// The handle of `name`, made on first use; `None` when librdkafka refuses to make one.
    fn get(&mut self, producer: &ThreadedProducer<KafkaContext>, name: &str) -> Option<TopicPtr> {
        if let Some(handle) = self.by_name.get(name) {
            return Some(TopicPtr(handle.0));
        }
        if self.by_name.len() >= MAX_TOPIC_HANDLES {
            self.by_name.clear();
        }
        let handle = TopicHandle::new(producer, name)?;
        let raw = TopicPtr(handle.0);
        self.by_name.insert(name.to_owned(), handle);
        Some(raw)
    }
}

/// An application topic handle (`rd_kafka_topic_t`) with the producer's default topic settings.
struct TopicHandle(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka's topic handles may be used from any thread; this one is only used
// through `&self` for `rd_kafka_produce_batch`, which locks the topic itself.
unsafe impl Send for TopicHandle {}
unsafe impl Sync for TopicHandle {}

/// A topic handle's pointer, used while its [`TopicHandle`] is kept.
#[derive(Clone, Copy)]
struct TopicPtr(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: as for `TopicHandle`.
unsafe impl Send for TopicPtr {}

impl TopicHandle {
    fn new(producer: &ThreadedProducer<KafkaContext>, name: &str) -> Option<TopicHandle> {
        let name = CString::new(name).ok()?;
        // SAFETY: the client pointer is valid while `producer` lives, and `Producer` drops its
        // handles before the producer; a null topic configuration means the defaults.
        let raw = unsafe {
            rdsys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        NonNull::new(raw).map(TopicHandle)
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: made by `rd_kafka_topic_new`, destroyed once, before the client (see
        // `Producer`).
        unsafe { rdsys::rd_kafka_topic_destroy(self.0.as_ptr()) }
    }
}

/// The encoded records of one input batch, waiting to be handed over: payloads and keys in
/// two buffers, each record a pair of ranges into them.
#[derive(Default)]
pub struct Staged {
    payloads: Vec<u8>,
    keys: Vec<u8>,
    /// Topics of this batch's records (usually one).
    topics: Vec<String>,
    records: Vec<StagedRecord>,
}

struct StagedRecord {
    topic: usize,
    payload: Range<usize>,
    key: Option<Range<usize>>,
    /// `None` once the record was handed over.
    tracker: Option<Arc<Tracker>>,
}

impl Staged {
    /// The buffer to encode the next record's payload into (append only).
    pub fn payload_buffer(&mut self) -> &mut Vec<u8> {
        &mut self.payloads
    }

    /// Records the payload written since `payload_start` as the next record's.
    pub fn push(
        &mut self,
        topic: &str,
        payload_start: usize,
        key: Option<&[u8]>,
        tracker: Arc<Tracker>,
    ) {
        let topic = match self.topics.iter().position(|t| t == topic) {
            Some(index) => index,
            None => {
                self.topics.push(topic.to_owned());
                self.topics.len() - 1
            }
        };
        let key = key.map(|key| {
            let start = self.keys.len();
            self.keys.extend_from_slice(key);
            start..self.keys.len()
        });
        self.records.push(StagedRecord {
            topic,
            payload: payload_start..self.payloads.len(),
            key,
            tracker: Some(tracker),
        });
    }

    fn payload(&self, record: &StagedRecord) -> &[u8] {
        &self.payloads[record.payload.clone()]
    }

    fn key(&self, record: &StagedRecord) -> Option<&[u8]> {
        record.key.clone().map(|range| &self.keys[range])
    }

    fn clear(&mut self) {
        self.payloads.clear();
        // An unusually large batch does not keep its buffer for good.
        self.payloads.shrink_to(STAGED_KEEP_BYTES);
        self.keys.clear();
        self.keys.shrink_to(STAGED_KEEP_BYTES);
        self.topics.clear();
        self.records.clear();
    }
}

/// One topic's staged records as librdkafka messages, in order. A message whose `_private` is
/// not null still owns its record's tracker (made by [`IntoOpaque::into_ptr`]): librdkafka
/// takes it only with the message. Dropping the set gives back the trackers it still holds,
/// so a record is never forgotten (its batch then fails, and is not acknowledged).
struct Outgoing {
    messages: Vec<rdsys::rd_kafka_message_t>,
    /// The staged record index of each message.
    indices: Vec<usize>,
    /// Messages before this one were taken or handed on.
    next: usize,
}

// SAFETY: the raw pointers are into the `Staged` buffers (which outlive the `Outgoing`, see
// `Producer::enqueue`) and owned tracker pointers (`Arc<Tracker>` is Send): nothing here is
// tied to a thread.
unsafe impl Send for Outgoing {}

impl Outgoing {
    fn new(staged: &mut Staged, topic: usize) -> Outgoing {
        // Sized for the usual case, one topic: growing them record by record was measurable.
        let mut messages = Vec::with_capacity(staged.records.len());
        let mut indices = Vec::with_capacity(staged.records.len());
        let Staged {
            payloads,
            keys,
            records,
            ..
        } = staged;
        for (index, record) in records.iter_mut().enumerate() {
            if record.topic != topic {
                continue;
            }
            let Some(tracker) = record.tracker.take() else {
                continue;
            };
            let payload = &payloads[record.payload.clone()];
            let (key, key_len) = match &record.key {
                Some(range) => (keys[range.clone()].as_ptr(), range.len()),
                None => (std::ptr::null(), 0),
            };
            messages.push(rdsys::rd_kafka_message_t {
                err: NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: 0,
                payload: payload.as_ptr() as *mut c_void,
                len: payload.len(),
                key: key as *mut c_void,
                key_len,
                offset: 0,
                _private: tracker.into_ptr(),
            });
            indices.push(index);
        }
        Outgoing {
            messages,
            indices,
            next: 0,
        }
    }

    /// Hands the messages from `next` on to librdkafka in one call and keeps only those it
    /// refused, in order. Returns true when it refused some (see [`Outgoing::take_refused`]).
    ///
    /// The payload and key pointers point into the [`Staged`] buffers, which are not touched
    /// until every message of the batch was handed over or given back.
    fn produce_batch(&mut self, topic: TopicPtr) -> bool {
        let start = self.next;
        let pending = &mut self.messages[start..];
        if pending.is_empty() {
            return false;
        }
        for message in pending.iter_mut() {
            message.err = NO_ERROR;
        }
        let count = pending.len().min(i32::MAX as usize);
        // SAFETY: the handle is alive (see `Producer`); the messages point at live buffers
        // (copied, `RD_KAFKA_MSG_F_COPY`), and each `_private` is an owned tracker pointer,
        // which librdkafka keeps for the delivery report only when it takes the message.
        let taken = unsafe {
            rdsys::rd_kafka_produce_batch(
                topic.0.as_ptr(),
                PARTITION_UA,
                rdsys::RD_KAFKA_MSG_F_COPY,
                pending.as_mut_ptr(),
                count as i32,
            )
        };
        if usize::try_from(taken).is_ok_and(|taken| taken == pending.len()) {
            for message in pending.iter_mut() {
                // librdkafka owns the tracker now.
                message._private = std::ptr::null_mut();
            }
            self.next = self.messages.len();
            return false;
        }
        // librdkafka sets `err` on each message it did not take (and on every one after a
        // full queue); those past `count` were not offered.
        let mut kept = start;
        for position in start..self.messages.len() {
            let refused = position >= start + count || self.messages[position].err != NO_ERROR;
            if refused {
                self.messages.swap(kept, position);
                self.indices.swap(kept, position);
                kept += 1;
            } else {
                self.messages[position]._private = std::ptr::null_mut();
            }
        }
        self.messages.truncate(kept);
        self.indices.truncate(kept);
        kept > start
    }

    /// The first message librdkafka refused (or, without a topic handle, the next message),
    /// with its tracker back. The ones after it go again with the next
    /// [`Outgoing::produce_batch`].
    fn take_refused(&mut self) -> Option<(usize, Arc<Tracker>)> {
        let position = self.next;
        if position >= self.messages.len() {
            return None;
        }
        self.next += 1;
        let tracker = self.reclaim(position)?;
        Some((self.indices[position], tracker))
    }

    fn reclaim(&mut self, position: usize) -> Option<Arc<Tracker>> {
        let message = &mut self.messages[position];
        if message._private.is_null() {
            return None;
        }
        let raw = std::mem::replace(&mut message._private, std::ptr::null_mut());
        // SAFETY: a non-null `_private` is a pointer from `Arc::into_raw` that librdkafka did
        // not take; it is nulled here so it is converted back once.
        Some(unsafe { Arc::<Tracker>::from_ptr(raw) })
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        for position in self.next..self.messages.len() {
            drop(self.reclaim(position));
        }
    }
}
