//! What the unit tests share: [`FakeHost`], a host with Envoy's shared-data rules and a clock
//! the test sets, for driving [`crate::vm::Vm`] and [`crate::lease`]; and seeded malformed
//! input for the parsers' robustness tests ([`mutants`], [`nested`]).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use crate::host::Host;
use crate::metrics::Kind;
use crate::rng::{Rng, SplitMix64};

/// Spliced into inputs: JSON structure and escapes, numbers no field can hold, SSE line breaks
/// and field names, NUL and a byte-order mark.
const TOKENS: [&[u8]; 20] = [
    b"{",
    b"[",
    b"\"",
    b"}",
    b"]",
    b",",
    b":",
    b"\\u0000",
    b"\0",
    b"\\ud800",
    b"1e309",
    b"-1",
    b"18446744073709551616",
    b"null",
    b"\n",
    b"\r",
    b"\n\n",
    b"data: ",
    b"event: snapshot\n",
    "\u{feff}".as_bytes(),
];

/// `count` mutants of `input`, each with one to three edits: bit flips, spliced tokens, cut
/// ranges and random bytes.
pub fn mutants(input: &[u8], seed: u64, count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut rng = SplitMix64::new(seed);
    (0..count).map(move |_| {
        let mut bytes = input.to_vec();
        for _ in 0..=below(&mut rng, 3) {
            let at = below(&mut rng, bytes.len() + 1);
            match below(&mut rng, 4) {
                0 if at < bytes.len() => bytes[at] ^= 1 << below(&mut rng, 8),
                1 => {
                    let token = TOKENS[below(&mut rng, TOKENS.len())];
                    bytes.splice(at..at, token.iter().copied());
                }
                2 if at < bytes.len() => {
                    let end = (at + 1 + below(&mut rng, 8)).min(bytes.len());
                    bytes.drain(at..end);
                }
                _ => bytes.insert(at, rng.next_u64() as u8),
            }
        }
        bytes
    })
}

fn below(rng: &mut SplitMix64, n: usize) -> usize {
    rng.below(n as u64) as usize
}

/// `n` nested JSON arrays around `null`.
pub fn nested(n: usize) -> String {
    format!("{}null{}", "[".repeat(n), "]".repeat(n))
}

/// One Envoy process as its VMs see it: one wall clock, one shared-data store and one set of
/// stats (each VM defines its own ids, as in Envoy, but a counter's value is the sum of every
/// VM's increments).
///
/// Shared data follows proxy-wasm-cpp-host (`src/shared_data.cc`): every write gets the next
/// CAS from one counter for all keys (never 0); a write that carries a CAS fails unless it is
/// the key's current one, and a write to a key that does not exist yet always succeeds.
#[derive(Debug)]
pub struct Process {
    now_ns: Cell<u64>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    next_cas: Cell<u32>,
    /// Stat values by name: counters summed, gauges and histograms their last value.
    stats: RefCell<HashMap<String, i64>>,
}

impl Process {
    /// A process whose clock reads `now_ms`.
    pub fn at_ms(now_ms: u64) -> Rc<Process> {
        Rc::new(Process {
            now_ns: Cell::new(now_ms * 1_000_000),
            shared: RefCell::default(),
            next_cas: Cell::new(1),
            stats: RefCell::default(),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ns.get() / 1_000_000
    }

    pub fn advance_ms(&self, ms: u64) {
        self.now_ns.set(self.now_ns.get() + ms * 1_000_000);
    }

    /// A shared-data value as text.
    pub fn shared(&self, key: &str) -> Option<String> {
        let shared = self.shared.borrow();
        let (value, _) = shared.get(key)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.shared.borrow().get(key) {
            Some((value, cas)) => (Some(value.clone()), Some(*cas)),
            None => (None, None),
        }
    }

    /// Writes as `proxy_set_shared_data` does; false on a CAS mismatch.
    pub fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut shared = self.shared.borrow_mut();
        if let (Some((_, current)), Some(cas)) = (shared.get(key), cas) {
            if *current != cas {
                return false;
            }
        }
        let next = self.next_cas.get();
        self.next_cas.set(next.checked_add(1).unwrap_or(1));
        shared.insert(key.to_owned(), (value.to_vec(), next));
        true
    }
}

/// What a VM did through its host that a test looks at, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A poll: its `:path`, its headers besides the pseudo-headers, and its timeout.
    Dispatch {
        path: String,
        headers: Vec<(String, String)>,
        timeout_ms: u64,
    },
    Resume {
        context: u32,
    },
    Reply {
        context: u32,
        status: u16,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    ResponseHeader {
        context: u32,
        name: String,
        value: String,
    },
    GrpcReply {
        context: u32,
        code: u8,
        message: Option<String>,
        headers: Vec<(String, String)>,
    },
}

/// One VM's host: its own contexts, calls and stats, the [`Process`] it runs in. Clones share
/// everything, so a test keeps one to look at what the VM did.
#[derive(Clone)]
pub struct FakeHost {
    pub process: Rc<Process>,
    vm: Rc<FakeVm>,
}

#[derive(Default)]
struct FakeVm {
    calls: RefCell<Vec<Call>>,
    effective: Cell<u32>,
    /// Contexts that ended: setting them effective fails, as in Envoy.
    gone: RefCell<Vec<u32>>,
    tokens: Cell<u32>,
    refuse_dispatch: Cell<bool>,
    /// The answer to the call being answered: `:status` and body.
    answer: RefCell<(Option<String>, Vec<u8>)>,
    /// Stats by id (the index): kind, name and every increment or record.
    stats: RefCell<Vec<(Kind, String, Vec<i64>)>>,
    tick_ms: Cell<Option<u64>>,
    /// Whether requests are gRPC (`content-type: application/grpc`).
    grpc: Cell<bool>,
    /// Runs just before the next shared-data write: another VM acting in between.
    before_write: RefCell<Option<Box<dyn FnOnce()>>>,
    /// `PluginConfig.name`; none by default.
    plugin_name: RefCell<Option<String>>,
}

impl FakeHost {
    pub fn new(process: &Rc<Process>) -> Self {
        FakeHost {
            process: Rc::clone(process),
            vm: Rc::default(),
        }
    }

    /// Takes the calls recorded so far.
    pub fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.vm.calls.borrow_mut())
    }

    /// The paths of the polls among `calls`.
    pub fn polls(calls: &[Call]) -> Vec<&str> {
        calls
            .iter()
            .filter_map(|call| match call {
                Call::Dispatch { path, .. } => Some(path.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The headers of the polls among `calls`.
    pub fn poll_headers(calls: &[Call]) -> Vec<&[(String, String)]> {
        calls
            .iter()
            .filter_map(|call| match call {
                Call::Dispatch { headers, .. } => Some(headers.as_slice()),
                _ => None,
            })
            .collect()
    }

    /// The value of stat `name` in the whole process (every VM's increments).
    pub fn process_stat(&self, name: &str) -> i64 {
        self.process.stats.borrow().get(name).copied().unwrap_or(0)
    }

    /// The tick period last armed, in ms.
    pub fn tick_ms(&self) -> Option<u64> {
        self.vm.tick_ms.get()
    }

    /// Context `id` ended (its requests can no longer be resumed).
    pub fn end_context(&self, id: u32) {
        self.vm.gone.borrow_mut().push(id);
    }

    /// Names the plugin this VM belongs to (as `PluginConfig.name`).
    pub fn set_plugin_name(&self, name: &str) {
        *self.vm.plugin_name.borrow_mut() = Some(name.to_owned());
    }

    /// Runs `action` just before this VM's next shared-data write, as if another VM ran between
    /// this one's read and its write.
    pub fn before_next_write(&self, action: impl FnOnce() + 'static) {
        *self.vm.before_write.borrow_mut() = Some(Box::new(action));
    }

    /// Makes the requests this VM sees gRPC requests (or not).
    pub fn grpc_requests(&self, grpc: bool) {
        self.vm.grpc.set(grpc);
    }

    pub fn refuse_dispatch(&self, refuse: bool) {
        self.vm.refuse_dispatch.set(refuse);
    }

    /// What the next `http_call_response_*` calls return.
    pub fn answer(&self, status: Option<&str>, body: &[u8]) {
        *self.vm.answer.borrow_mut() = (status.map(str::to_owned), body.to_vec());
    }

    /// The token the last dispatched call got.
    pub fn last_token(&self) -> u32 {
        self.vm.tokens.get()
    }

    /// The sum of a counter's increments (0 when never defined).
    pub fn counter(&self, name: &str) -> i64 {
        self.records(name).iter().sum()
    }

    /// The last value recorded to a gauge.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.records(name).last().copied()
    }

    /// Every value recorded to a stat.
    pub fn records(&self, name: &str) -> Vec<i64> {
        self.vm
            .stats
            .borrow()
            .iter()
            .find(|(_, n, _)| n == name)
            .map(|(_, _, values)| values.clone())
            .unwrap_or_default()
    }

    fn record(&self, call: Call) {
        self.vm.calls.borrow_mut().push(call);
    }

    fn stat(&self, id: u32, value: i64) {
        if let Some((kind, name, values)) = self.vm.stats.borrow_mut().get_mut(id as usize) {
            values.push(value);
            let mut process = self.process.stats.borrow_mut();
            let total = process.entry(name.clone()).or_insert(0);
            match kind {
                Kind::Counter => *total += value,
                Kind::Gauge | Kind::Histogram => *total = value,
            }
        }
    }
}

impl Host for FakeHost {
    fn now_ns(&self) -> Option<u64> {
        Some(self.process.now_ns.get())
    }

    fn shared_data(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        self.process.get(key)
    }

    fn plugin_name(&self) -> Option<String> {
        self.vm.plugin_name.borrow().clone()
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let interleaved = self.vm.before_write.borrow_mut().take();
        if let Some(action) = interleaved {
            action();
        }
        self.process.set(key, value, cas)
    }

    fn set_tick_period_ms(&self, ms: u64) -> bool {
        self.vm.tick_ms.set(Some(ms));
        true
    }

    fn set_effective_context(&self, context_id: u32) -> bool {
        if self.vm.gone.borrow().contains(&context_id) {
            return false;
        }
        self.vm.effective.set(context_id);
        true
    }

    fn resume_http_request(&self) -> bool {
        self.record(Call::Resume {
            context: self.vm.effective.get(),
        });
        true
    }

    fn send_http_response(
        &self,
        status: u16,
        headers: Vec<(&str, &str)>,
        body: Option<&[u8]>,
    ) -> bool {
        self.record(Call::Reply {
            context: self.vm.effective.get(),
            status,
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
            body: body.map(|b| String::from_utf8_lossy(b).into_owned()),
        });
        true
    }

    fn send_grpc_response(
        &self,
        code: u8,
        message: Option<&str>,
        headers: Vec<(&str, &str)>,
    ) -> bool {
        self.record(Call::GrpcReply {
            context: self.vm.effective.get(),
            code,
            message: message.map(str::to_owned),
            headers: headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
                .collect(),
        });
        true
    }

    fn is_grpc_request(&self) -> bool {
        self.vm.grpc.get()
    }

    fn set_response_header(&self, name: &str, value: &str) -> bool {
        self.record(Call::ResponseHeader {
            context: self.vm.effective.get(),
            name: name.to_owned(),
            value: value.to_owned(),
        });
        true
    }

    fn dispatch_get(
        &self,
        _cluster: &str,
        _authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        timeout_ms: u64,
    ) -> Result<u32, String> {
        if self.vm.refuse_dispatch.get() {
            return Err("BadArgument".to_owned());
        }
        self.record(Call::Dispatch {
            path: path.to_owned(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            timeout_ms,
        });
        let token = self.vm.tokens.get() + 1;
        self.vm.tokens.set(token);
        Ok(token)
    }

    fn http_call_response_status(&self) -> Option<String> {
        self.vm.answer.borrow().0.clone()
    }

    fn http_call_response_body(&self, size: usize) -> Option<Vec<u8>> {
        let answer = self.vm.answer.borrow();
        Some(answer.1[..size.min(answer.1.len())].to_vec())
    }

    fn define_metric(&self, kind: Kind, name: &str) -> Option<u32> {
        let mut stats = self.vm.stats.borrow_mut();
        stats.push((kind, name.to_owned(), Vec::new()));
        u32::try_from(stats.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        self.stat(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.stat(id, i64::try_from(value).unwrap_or(i64::MAX));
    }

    fn metric_value(&self, id: u32) -> Option<u64> {
        let stats = self.vm.stats.borrow();
        let (_, name, _) = stats.get(id as usize)?;
        u64::try_from(self.process_stat(name)).ok()
    }
}
