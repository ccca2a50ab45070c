//! Dry runs: a plugin runs on an event exactly as in a delivery (same runtime, linker, limits
//! and sandbox), but nothing it does leaves the run. [`DryRun`] is a [`PluginServices`] that
//! records instead of acting:
//!
//! - `send-message` is recorded (conversation, text) and answered with a made-up message id;
//!   the text is checked as a real send checks it, the conversation is not looked up;
//! - key-value reads see a base (the plugin's real store, read only, or a map for a run without
//!   a server: [`MemoryKv`]) overlaid with the run's own writes;
//! - writes, deletes, increments and set-ifs are recorded and applied to the overlay only,
//!   under the same rules as the real store ([`crate::store::kv`]): the key limit counts the
//!   base's keys plus the overlay's;
//! - log lines and outgoing HTTP requests are kept for the report, not written anywhere.
//!
//! Outgoing `wasi:http` is not faked: a request to an allowed host is really sent (under the
//! same `allowed_hosts` and network policy), since its answer is what the plugin acts on.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::PluginRuntime;
use super::invoke::{Decision, Input, InvokeError};
use super::registry::LoadedPlugin;
use super::services::{
    HttpRequest, KvLimits, KvRefusal, KvResult, Outgoing, PluginServices, SendRefusal, Unavailable,
};
use crate::model::PluginLogLine;
use crate::store::kv;

/// Dry runs at once, per runtime. Each holds a pooled instance; the pool has room for these
/// beyond the deliveries' (see `crate::open`).
pub const DRY_RUNS: usize = 8;

/// How long a dry run waits for one of the [`DRY_RUNS`] slots.
const SLOT_WAIT: Duration = Duration::from_secs(10);

/// What a dry run's key-value reads see before its own writes.
#[async_trait]
pub trait KvBase: Send + Sync {
    /// The value under `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable>;
    /// How many keys there are (for the key limit).
    async fn key_count(&self) -> Result<u32, Unavailable>;
}

/// A base held in memory: for runs without a server (e.g. from a JSON file).
#[derive(Debug, Clone, Default)]
pub struct MemoryKv(BTreeMap<String, Vec<u8>>);

impl MemoryKv {
    /// A base holding these entries.
    pub fn new(entries: BTreeMap<String, Vec<u8>>) -> MemoryKv {
        MemoryKv(entries)
    }

    /// A base from a JSON object: a string value is stored as its UTF-8 bytes, any other value
    /// as its JSON text (what the SDK's `kv::set_json` writes).
    pub fn from_json(value: &serde_json::Value) -> Result<MemoryKv, String> {
        let object = value
            .as_object()
            .ok_or("the key-value state must be a JSON object")?;
        let entries = object
            .iter()
            .map(|(k, v)| {
                let bytes = match v {
                    serde_json::Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string().into_bytes(),
                };
                (k.clone(), bytes)
            })
            .collect();
        Ok(MemoryKv(entries))
    }
}

#[async_trait]
impl KvBase for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        Ok(self.0.get(key).cloned())
    }

    async fn key_count(&self) -> Result<u32, Unavailable> {
        Ok(u32::try_from(self.0.len()).unwrap_or(u32::MAX))
    }
}

/// A `send-message` call a dry run recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// The conversation.
    pub conversation_id: String,
    /// The text.
    pub text: String,
    /// The made-up id the plugin got back.
    pub message_id: String,
}

/// A key-value write a dry run recorded, with what became of it in the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvWrite {
    /// `set`.
    Set {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Why it was refused, if it was.
        refused: Option<KvRefusal>,
    },
    /// `delete`.
    Delete {
        /// Key.
        key: String,
    },
    /// `increment`.
    Increment {
        /// Key.
        key: String,
        /// What was added.
        delta: i64,
        /// The new value, or why nothing was written.
        result: Result<i64, KvRefusal>,
    },
    /// `set-if`.
    SetIf {
        /// Key.
        key: String,
        /// The value required (`None`: absent).
        expected: Option<Vec<u8>>,
        /// The value to write.
        value: Vec<u8>,
        /// Whether it wrote, or why it was refused.
        result: Result<bool, KvRefusal>,
    },
}

/// Everything a dry run recorded.
#[derive(Debug, Clone, Default)]
pub struct Captured {
    /// `send-message` calls that were answered with an id, in order.
    pub sent_messages: Vec<SentMessage>,
    /// Key-value writes, in order.
    pub kv_writes: Vec<KvWrite>,
    /// Log lines (log calls, stdout, stderr, refusals, the failure) at the plugin's level.
    pub logs: Vec<PluginLogLine>,
    /// Outgoing HTTP requests.
    pub http_requests: Vec<HttpRequest>,
}

/// A key the run has touched: its value now (`None`: absent) and whether the base has it.
struct Slot {
    value: Option<Vec<u8>>,
    in_base: bool,
}

#[derive(Default)]
struct Recording {
    overlay: HashMap<String, Slot>,
    base_keys: Option<u32>,
    captured: Captured,
}

impl Recording {
    /// Keys now: the base's, plus those the run added, minus those it deleted.
    fn key_count(&self, base_keys: u32) -> u32 {
        let (mut added, mut removed) = (0u32, 0u32);
        for slot in self.overlay.values() {
            match (slot.in_base, slot.value.is_some()) {
                (false, true) => added += 1,
                (true, false) => removed += 1,
                _ => {}
            }
        }
        (base_keys + added).saturating_sub(removed)
    }

    fn put(&mut self, key: &str, value: Option<Vec<u8>>) {
        self.overlay
            .get_mut(key)
            .expect("a key is read before it is written")
            .value = value;
    }
}

/// A [`PluginServices`] that records instead of acting (see the module docs).
pub struct DryRun {
    base: Arc<dyn KvBase>,
    recording: Mutex<Recording>,
}

impl DryRun {
    /// A run whose reads start from `base`.
    pub fn new(base: Arc<dyn KvBase>) -> DryRun {
        DryRun {
            base,
            recording: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Recording> {
        self.recording.lock().expect("dry run lock")
    }

    /// What was recorded so far (taken: a second call returns nothing new).
    pub fn take(&self) -> Captured {
        std::mem::take(&mut self.lock().captured)
    }

    /// The value under `key` as the run sees it; the key joins the overlay.
    async fn current(&self, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        if let Some(slot) = self.lock().overlay.get(key) {
            return Ok(slot.value.clone());
        }
        let value = self.base.get(key).await?;
        let mut recording = self.lock();
        let slot = recording.overlay.entry(key.to_string()).or_insert(Slot {
            in_base: value.is_some(),
            value,
        });
        Ok(slot.value.clone())
    }

    /// Whether a new key fits, counting the base's keys (read once) and the overlay.
    async fn room_for_new_key(
        &self,
        limits: KvLimits,
    ) -> Result<Result<(), KvRefusal>, Unavailable> {
        let known = self.lock().base_keys;
        let base_keys = match known {
            Some(n) => n,
            None => {
                let n = self.base.key_count().await?;
                self.lock().base_keys = Some(n);
                n
            }
        };
        Ok(kv::room_for_new_key(
            self.lock().key_count(base_keys),
            limits,
        ))
    }

    fn record(&self, write: KvWrite) {
        self.lock().captured.kv_writes.push(write);
    }
}

#[async_trait]
impl PluginServices for DryRun {
    async fn send_message(&self, message: Outgoing) -> Result<String, SendRefusal> {
        crate::messages::validate(&message.conversation_id, &message.text)
            .map_err(SendRefusal::Invalid)?;
        let message_id = format!("dry-run-{}", uuid::Uuid::new_v4());
        self.lock().captured.sent_messages.push(SentMessage {
            conversation_id: message.conversation_id,
            text: message.text,
            message_id: message_id.clone(),
        });
        Ok(message_id)
    }

    async fn kv_get(&self, _plugin_id: &str, key: &str) -> Result<Option<Vec<u8>>, Unavailable> {
        self.current(key).await
    }

    async fn kv_set(
        &self,
        _plugin_id: &str,
        key: &str,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<()> {
        let outcome = if self.current(key).await?.is_none() {
            self.room_for_new_key(limits).await?
        } else {
            Ok(())
        };
        if outcome.is_ok() {
            self.lock().put(key, Some(value.clone()));
        }
        self.record(KvWrite::Set {
            key: key.to_string(),
            value,
            refused: outcome.clone().err(),
        });
        Ok(outcome)
    }

    async fn kv_delete(&self, _plugin_id: &str, key: &str) -> Result<(), Unavailable> {
        self.current(key).await?;
        self.lock().put(key, None);
        self.record(KvWrite::Delete {
            key: key.to_string(),
        });
        Ok(())
    }

    async fn kv_increment(
        &self,
        _plugin_id: &str,
        key: &str,
        delta: i64,
        limits: KvLimits,
    ) -> KvResult<i64> {
        let current = self.current(key).await?;
        let mut outcome = kv::increment(current.as_deref(), delta, limits);
        if outcome.is_ok()
            && current.is_none()
            && let Err(refused) = self.room_for_new_key(limits).await?
        {
            outcome = Err(refused);
        }
        let result = outcome.map(|(n, text)| {
            self.lock().put(key, Some(text.into_bytes()));
            n
        });
        self.record(KvWrite::Increment {
            key: key.to_string(),
            delta,
            result: result.clone(),
        });
        Ok(result)
    }

    async fn kv_set_if(
        &self,
        _plugin_id: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        limits: KvLimits,
    ) -> KvResult<bool> {
        let current = self.current(key).await?;
        let result = if current != expected {
            Ok(false)
        } else if current.is_none() {
            self.room_for_new_key(limits).await?.map(|()| true)
        } else {
            Ok(true)
        };
        if result == Ok(true) {
            self.lock().put(key, Some(value.clone()));
        }
        self.record(KvWrite::SetIf {
            key: key.to_string(),
            expected,
            value,
            result: result.clone(),
        });
        Ok(result)
    }

    fn plugin_logs(&self, _account_id: &str, _plugin_id: &str, lines: Vec<PluginLogLine>) {
        self.lock().captured.logs.extend(lines);
    }

    fn http_requests(&self, requests: Vec<HttpRequest>) {
        self.lock().captured.http_requests.extend(requests);
    }
}

/// What a dry run came to.
#[derive(Debug)]
pub struct DryRunReport {
    /// The decision, or why there is none.
    pub result: Result<Decision, InvokeError>,
    /// Wall-clock time of the invocation (instantiation and handler).
    pub duration: Duration,
    /// What the plugin did meanwhile.
    pub captured: Captured,
}

/// Every dry-run slot, or the plugin memory budget, stayed taken for `SLOT_WAIT`.
#[derive(Debug, thiserror::Error)]
#[error("too many test runs at once; try again shortly")]
pub struct Busy;

impl PluginRuntime {
    /// Runs `plugin` on one event with a [`DryRun`] over `base`: the same invocation as a
    /// delivery, nothing leaving it. At most [`DRY_RUNS`] run at once.
    pub async fn dry_run(
        &self,
        plugin: Arc<LoadedPlugin>,
        base: Arc<dyn KvBase>,
        input: Input<'_>,
    ) -> Result<DryRunReport, Busy> {
        let waiting = Instant::now();
        let _slot = tokio::time::timeout(SLOT_WAIT, self.dry_runs.acquire())
            .await
            .map_err(|_| Busy)?
            .expect("the dry-run semaphore is never closed");
        // Room in the memory budget is waited for within the same time.
        let left = SLOT_WAIT.saturating_sub(waiting.elapsed());
        let reservation =
            tokio::time::timeout(left, self.memory.reserve(plugin.limits.memory_bytes))
                .await
                .map_err(|_| Busy)?;
        let run = Arc::new(DryRun::new(base));
        let started = Instant::now();
        let (result, _) = self
            .invoke_measured(run.clone(), plugin, input, Some(reservation))
            .await;
        let duration = started.elapsed();
        Ok(DryRunReport {
            result,
            duration,
            captured: run.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: KvLimits = KvLimits {
        value_bytes: 16,
        keys: 2,
    };

    fn run(entries: &[(&str, &str)]) -> DryRun {
        let base = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect();
        DryRun::new(Arc::new(MemoryKv::new(base)))
    }

    #[tokio::test]
    async fn reads_see_the_base_overlaid_with_the_runs_writes() {
        let r = run(&[("a", "1"), ("b", "x")]);
        assert_eq!(r.kv_get("p", "a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            r.kv_set("p", "a", b"2".to_vec(), LIMITS).await.unwrap(),
            Ok(())
        );
        assert_eq!(r.kv_get("p", "a").await.unwrap(), Some(b"2".to_vec()));
        r.kv_delete("p", "b").await.unwrap();
        assert_eq!(r.kv_get("p", "b").await.unwrap(), None);
        assert_eq!(r.kv_increment("p", "a", 5, LIMITS).await.unwrap(), Ok(7));
        assert_eq!(
            r.kv_increment("p", "z", 1, LIMITS).await.unwrap(),
            Ok(1),
            "b was deleted, so a new key fits"
        );
        let writes = r.take().kv_writes;
        assert_eq!(writes.len(), 4);
        assert!(matches!(&writes[1], KvWrite::Delete { key } if key == "b"));
    }

    #[tokio::test]
    async fn limits_are_the_real_stores() {
        let r = run(&[("a", "1"), ("b", "x")]);
        assert_eq!(
            r.kv_set("p", "c", b"v".to_vec(), LIMITS).await.unwrap(),
            Err(KvRefusal::TooManyKeys(2))
        );
        assert_eq!(
            r.kv_get("p", "c").await.unwrap(),
            None,
            "a refused write is not applied"
        );
        assert_eq!(
            r.kv_increment("p", "b", 1, LIMITS).await.unwrap(),
            Err(KvRefusal::NotANumber)
        );
        assert_eq!(
            r.kv_set_if("p", "c", None, b"v".to_vec(), LIMITS)
                .await
                .unwrap(),
            Err(KvRefusal::TooManyKeys(2))
        );
        assert_eq!(
            r.kv_set("p", "a", b"overwrite".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(()),
            "an existing key needs no room"
        );
        let writes = r.take().kv_writes;
        assert!(matches!(
            &writes[0],
            KvWrite::Set {
                refused: Some(KvRefusal::TooManyKeys(2)),
                ..
            }
        ));
    }

    #[tokio::test]
    async fn set_if_compares_with_what_the_run_sees() {
        let r = run(&[]);
        let claim = |v: &str| r.kv_set_if("p", "k", None, v.as_bytes().to_vec(), LIMITS);
        assert_eq!(claim("first").await.unwrap(), Ok(true));
        assert_eq!(claim("second").await.unwrap(), Ok(false));
        assert_eq!(
            r.kv_set_if("p", "k", Some(b"first".to_vec()), b"third".to_vec(), LIMITS)
                .await
                .unwrap(),
            Ok(true)
        );
        assert_eq!(r.kv_get("p", "k").await.unwrap(), Some(b"third".to_vec()));
    }

    #[tokio::test]
    async fn messages_are_recorded_with_made_up_ids_and_checked_like_real_ones() {
        let r = run(&[]);
        let send = |text: &str| Outgoing {
            account_id: "acc".into(),
            conversation_id: "c1".into(),
            text: text.into(),
            causation: crate::events::caused_by("plg", "evt", 0),
        };
        let id = r.send_message(send("Hi!")).await.unwrap();
        assert!(id.starts_with("dry-run-"));
        assert!(matches!(
            r.send_message(send(" ")).await,
            Err(SendRefusal::Invalid(_))
        ));
        let sent = r.take().sent_messages;
        assert_eq!(
            sent,
            vec![SentMessage {
                conversation_id: "c1".into(),
                text: "Hi!".into(),
                message_id: id
            }]
        );
    }

    #[test]
    fn a_memory_base_reads_json() {
        let kv =
            MemoryKv::from_json(&serde_json::json!({"s": "text", "n": 3, "o": {"a": 1}})).unwrap();
        assert_eq!(kv.0["s"], b"text");
        assert_eq!(kv.0["n"], b"3");
        assert_eq!(kv.0["o"], br#"{"a":1}"#);
        assert!(MemoryKv::from_json(&serde_json::json!([1])).is_err());
    }
}
