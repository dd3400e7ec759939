//! `Endpoints`: the members a `Client` can talk to, and which one each attempt goes to.
//!
//! It owns the endpoint list (the caller's seeds, then members learned from member lists),
//! one lazily connected channel per endpoint, and what the client remembers of how each
//! endpoint behaved. The routing rules are pure (`Routing`, `Route`: time is an argument) and
//! unit-tested without I/O:
//!
//! - an attempt goes first to the *preferred* endpoint, the last one that answered (sticky),
//!   so a client that found a healthy member stays with it;
//! - an endpoint that said "not here" (refused or reset the connection, stayed silent past the
//!   attempt's budget, knows no leader, is starting, shutting down or no longer a member) is
//!   *avoided* for `AVOID_FOR`: later attempts try it only after every endpoint not avoided;
//! - within one call each endpoint is tried at most once per round, the next one at once; only
//!   after a whole round failed does the call pause (`RETRY_BACKOFF_MIN`, doubling up to
//!   `RETRY_BACKOFF_MAX`, jittered);
//! - an answer that names the leader sends the next attempt to the leader's endpoint, when a
//!   member list or a response header told the client which endpoint that member answers on;
//! - a write goes first to the endpoint of the member that the latest member list, write answer
//!   or redirect named as leader, which saves the member it would otherwise reach forwarding it
//!   (a hop each way). Only while that endpoint is not known to fail: an endpoint whose last
//!   attempt failed (a member down, or an advertised address this client cannot reach) is left
//!   to the rules above until it answers again. Reads and streams keep to the preferred
//!   endpoint, so a client's reads do not all land on the leader;
//! - an attempt's budget starts at `ATTEMPT_BUDGET_FIRST` and doubles after every attempt of
//!   the same call that timed out, so a member that swallows requests (paused, cut off) costs
//!   about a second, while a slow but healthy cluster still gets the time it needs.
//!
//! What it must never do: drop a seed, or hold an address twice.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use coord_proto::v1 as pb;
use coord_tls::{
    ChannelConnector, ClientTls, Http2Channel, Http2Settings, KeepAlive, TcpConnector, TlsConnector,
};
use tokio::time::Instant;
use tonic::codegen::http::Uri;
use tonic::service::interceptor::InterceptedService;

use crate::client::jittered;
use crate::error::Error;
use crate::lock::lock;

/// How long an endpoint that said "not here" is tried only after the others. A failover takes
/// a second or two and a restart a few more; an endpoint that recovers sooner is still tried
/// as soon as the others fail.
const AVOID_FOR: Duration = Duration::from_secs(5);
/// The budget of a call's first attempt: a healthy member answers a cheap request well within
/// it, and a member that swallows requests costs no more than this before the next is tried.
const ATTEMPT_BUDGET_FIRST: Duration = Duration::from_secs(1);
/// The first pause after a whole round of endpoints failed; it doubles up to the maximum.
const RETRY_BACKOFF_MIN: Duration = Duration::from_millis(50);
/// Longest pause between rounds: a failover takes about a second, so retrying at least every
/// half second keeps a call's wait close to the failover's.
const RETRY_BACKOFF_MAX: Duration = Duration::from_millis(500);
/// An endpoint that answered this recently is trusted to answer a call that cannot be retried
/// after an unknown outcome; otherwise such a call checks it first with a cheap request.
const ANSWER_FRESH_FOR: Duration = Duration::from_secs(1);
/// How often a channel pings its member over HTTP/2, and how long it waits for the answer
/// before it counts the member gone.
const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(750);
/// How many doublings an attempt's budget gets at most (a call's deadline caps it anyway).
const BUDGET_DOUBLINGS_MAX: u32 = 6;

const _: () = assert!(RETRY_BACKOFF_MIN.as_millis() <= RETRY_BACKOFF_MAX.as_millis());

/// A channel whose every request carries the client's credentials (its bearer token).
pub(crate) type Transport = InterceptedService<Http2Channel, Credentials>;

/// Adds `authorization: Bearer <token>` to every request when the client has a token.
#[derive(Clone, Default)]
pub(crate) struct Credentials {
    bearer: Option<tonic::metadata::AsciiMetadataValue>,
}

impl Credentials {
    /// Credentials for `token`; a token that cannot be a header value is an `InvalidArgument`.
    pub(crate) fn new(token: Option<&str>) -> Result<Credentials, Error> {
        let bearer = token
            .map(|token| {
                format!("Bearer {}", token.trim())
                    .parse()
                    .map_err(|_| Error::InvalidArgument {
                        message: "the token holds characters a header cannot carry".into(),
                    })
            })
            .transpose()?;
        Ok(Credentials { bearer })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(bearer) = &self.bearer {
            request
                .metadata_mut()
                .insert("authorization", bearer.clone());
        }
        Ok(request)
    }
}

/// One endpoint to send an attempt to.
#[derive(Clone)]
pub(crate) struct Target {
    pub(crate) address: String,
    pub(crate) channel: Transport,
}

/// See the module documentation.
pub(crate) struct Endpoints {
    dial: Dial,
    table: std::sync::Mutex<Table>,
}

struct Table {
    routing: Routing,
    /// One channel per address in `routing`, in the same order.
    channels: Vec<Transport>,
}

impl Endpoints {
    /// The caller's `seeds`, each with a lazily connected channel; an address that is not a
    /// valid URI is an `InvalidArgument`.
    pub(crate) fn new(seeds: Vec<String>, dial: Dial) -> Result<Endpoints, Error> {
        let routing = Routing::new(seeds);
        let mut channels = Vec::new();
        for health in &routing.endpoints {
            channels.push(dial.channel(&health.address)?);
        }
        Ok(Endpoints {
            dial,
            table: std::sync::Mutex::new(Table { routing, channels }),
        })
    }

    /// Every address, seeds first.
    pub(crate) fn addresses(&self) -> Vec<String> {
        lock(&self.table).routing.addresses()
    }

    /// Where the next attempt of `route` goes; `None` when this round tried every endpoint
    /// (pause for `Route::start_round`, then ask again).
    pub(crate) fn next(&self, route: &mut Route) -> Option<Target> {
        let table = lock(&self.table);
        let index = table.routing.pick(route, Instant::now())?;
        Some(Target {
            address: table.routing.endpoints[index].address.clone(),
            channel: table.channels[index].clone(),
        })
    }

    /// The pause before `route`'s next attempt: none while this round has an endpoint left.
    pub(crate) fn pause_before_next(&self, route: &Route) -> Duration {
        if lock(&self.table).routing.untried(route) {
            Duration::ZERO
        } else {
            route.backoff
        }
    }

    /// `address` answered (a rejection counts): prefer it from now on.
    pub(crate) fn answered(&self, address: &str) {
        lock(&self.table).routing.answered(address, Instant::now());
    }

    /// `address` answered a write: it is healthy, but the preferred endpoint (for reads and
    /// streams) stays where it was.
    pub(crate) fn answered_write(&self, address: &str) {
        lock(&self.table).routing.reached(address, Instant::now());
    }

    /// A response header from `address`: which member answered there and which member it
    /// knows as leader (0: none known). Returns whether that leader has no known endpoint.
    pub(crate) fn heard(&self, address: &str, member_id: u64, leader_id: u64) -> bool {
        let mut table = lock(&self.table);
        table.routing.identify(address, member_id);
        table.routing.leader_is(leader_id);
        table.routing.leader_unlisted()
    }

    /// A member said `leader_id` leads (an error's hint).
    pub(crate) fn leader_is(&self, leader_id: u64) {
        lock(&self.table).routing.leader_is(leader_id);
    }

    /// `address` said "not here": avoid it for a while.
    pub(crate) fn failed(&self, address: &str) {
        lock(&self.table).routing.failed(address, Instant::now());
    }

    /// Whether `address` answered within `ANSWER_FRESH_FOR`.
    pub(crate) fn answered_recently(&self, address: &str) -> bool {
        lock(&self.table)
            .routing
            .answered_recently(address, Instant::now())
    }

    /// `address` answered as member `member_id` (a response header said so).
    pub(crate) fn identify(&self, address: &str, member_id: u64) {
        lock(&self.table).routing.identify(address, member_id);
    }

    /// The member that answers on `address`, once known.
    pub(crate) fn member_of(&self, address: &str) -> Option<u64> {
        let table = lock(&self.table);
        let index = table.routing.position(address)?;
        table.routing.endpoints[index].member_id
    }

    /// Every endpoint but `address`.
    pub(crate) fn others(&self, address: &str) -> Vec<Target> {
        let table = lock(&self.table);
        table
            .routing
            .endpoints
            .iter()
            .zip(&table.channels)
            .filter(|(health, _)| health.address != address)
            .map(|(health, channel)| Target {
                address: health.address.clone(),
                channel: channel.clone(),
            })
            .collect()
    }

    /// Adds the members' client addresses as endpoints and drops learned endpoints that
    /// `members` no longer names (see `Routing::learn`); an address that makes no valid URI is
    /// dropped again.
    pub(crate) fn learn(&self, members: &[pb::Member]) {
        let members: Vec<(u64, String)> = members
            .iter()
            .map(|member| (member.id, member.client_address.trim().to_owned()))
            .collect();
        let mut table = lock(&self.table);
        let mut known: Vec<(String, Transport)> = table
            .routing
            .addresses()
            .into_iter()
            .zip(std::mem::take(&mut table.channels))
            .collect();
        table.routing.learn(&members);
        let mut channels = Vec::with_capacity(table.routing.endpoints.len());
        let mut unusable = Vec::new();
        for health in &table.routing.endpoints {
            match known
                .iter()
                .position(|(address, _)| *address == health.address)
            {
                Some(position) => channels.push(known.swap_remove(position).1),
                None => match self.dial.channel(&health.address) {
                    Ok(channel) => channels.push(channel),
                    Err(_) => unusable.push(health.address.clone()),
                },
            }
        }
        // Seeds made valid channels when the client was built, so only learned ones go.
        table
            .routing
            .endpoints
            .retain(|health| !unusable.contains(&health.address));
        table.channels = channels;
    }
}

/// How every channel of a client is opened: its connect timeout, TLS and credentials.
pub(crate) struct Dial {
    pub(crate) connect_timeout: Duration,
    /// TLS for every endpoint (`None`: plaintext).
    pub(crate) tls: Option<Arc<ClientTls>>,
    pub(crate) credentials: Credentials,
}

impl Dial {
    /// A lazily connected channel to `address` (`host:port`, or a URI with a scheme).
    fn channel(&self, address: &str) -> Result<Transport, Error> {
        let channel = channel(address, self.connect_timeout, self.tls.as_ref())?;
        Ok(InterceptedService::new(channel, self.credentials.clone()))
    }
}

/// A lazily connected channel to `address` (`host:port`, or a URI with a scheme), over TLS
/// when `tls` is given. Each call is handed to the connection's task itself
/// (`coord_tls::Http2Channel`), not through tonic's `tower::buffer` task: one task hand-off
/// less on every call.
fn channel(
    address: &str,
    connect_timeout: Duration,
    tls: Option<&Arc<ClientTls>>,
) -> Result<Http2Channel, Error> {
    let uri = match address.split_once("://") {
        Some(("https", _)) if tls.is_none() => {
            return Err(Error::InvalidArgument {
                message: format!(
                    "endpoint {address:?} is https: give the CA to trust (--cacert, or \
                     ClientOptions::tls)"
                ),
            })
        }
        Some((_, rest)) if tls.is_some() => format!("https://{rest}"),
        Some(_) => address.to_owned(),
        None if tls.is_some() => format!("https://{address}"),
        None => format!("http://{address}"),
    };
    let origin = uri
        .parse::<Uri>()
        .ok()
        .filter(|origin| origin.authority().is_some())
        .ok_or_else(|| Error::InvalidArgument {
            message: format!("endpoint {address:?} is not host:port or a URI"),
        })?;
    // A member that is paused, frozen or cut off keeps its TCP connection open but stops
    // answering pings: the connection (and every call on it) then fails within about
    // KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT, and the call moves to the next endpoint. A busy
    // member answers pings from its connection task, however slow its calls.
    let settings = Http2Settings {
        keep_alive: Some(KeepAlive {
            interval: KEEPALIVE_INTERVAL,
            timeout: KEEPALIVE_TIMEOUT,
        }),
        ..Http2Settings::default()
    };
    // Our own connectors, with TCP_NODELAY and each request's HTTP/2 frames gathered into one
    // write (`coord_tls::Coalesce`).
    let connector = match tls {
        Some(tls) => ChannelConnector::Tls(TlsConnector::new(tls.clone(), connect_timeout)),
        None => ChannelConnector::Tcp(TcpConnector::new(connect_timeout)),
    };
    Ok(Http2Channel::new(origin, connector, settings))
}

/// Whether a member's advertised client address can be dialled: not empty, and not an
/// unspecified address (`0.0.0.0`, `[::]`) that a member listening on every interface may
/// advertise.
pub(crate) fn dialable(address: &str) -> bool {
    let address = address.trim();
    let without_scheme = address
        .split_once("://")
        .map_or(address, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = if let Some(bracketed) = without_scheme.strip_prefix('[') {
        bracketed
            .split_once(']')
            .map_or(bracketed, |(host, _)| host)
    } else {
        match without_scheme.rsplit_once(':') {
            // One colon: host and port. More: a bare IPv6 address.
            Some((host, _)) if !host.contains(':') => host,
            _ => without_scheme,
        }
    };
    if host.is_empty() {
        return false;
    }
    !host
        .parse::<IpAddr>()
        .is_ok_and(|address| address.is_unspecified())
}

/// What the client knows of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Health {
    address: String,
    /// Given by the caller: never dropped.
    seed: bool,
    /// The member that answers on it, once a member list or a response header said.
    member_id: Option<u64>,
    /// Tried only after the others until then.
    avoid_until: Option<Instant>,
    answered_at: Option<Instant>,
    /// Whether the last attempt on it failed ("not here"); cleared when it answers.
    failed_last: bool,
}

impl Health {
    fn new(address: String, seed: bool) -> Health {
        Health {
            address,
            seed,
            member_id: None,
            avoid_until: None,
            answered_at: None,
            failed_last: false,
        }
    }

    fn avoided(&self, now: Instant) -> bool {
        self.avoid_until.is_some_and(|until| now < until)
    }
}

/// The pure routing state of `Endpoints` (see the module documentation).
#[derive(Debug, Clone, Default)]
struct Routing {
    /// Seeds first, in the caller's order, then learned members; addresses are unique.
    endpoints: Vec<Health>,
    /// The endpoint that answered last.
    preferred: Option<String>,
    /// The member the latest header or hint named as leader.
    leader: Option<u64>,
}

impl Routing {
    fn new(seeds: Vec<String>) -> Routing {
        let mut routing = Routing::default();
        for seed in seeds {
            if !routing.endpoints.iter().any(|known| known.address == seed) {
                routing.endpoints.push(Health::new(seed, true));
            }
        }
        routing
    }

    fn addresses(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|health| health.address.clone())
            .collect()
    }

    fn position(&self, address: &str) -> Option<usize> {
        self.endpoints
            .iter()
            .position(|health| health.address == address)
    }

    /// The order in which endpoints are worth trying at `now`: the preferred one, then the
    /// others after it in list order, skipping avoided ones; then the avoided ones, those whose
    /// avoidance ends first first.
    fn order(&self, now: Instant) -> Vec<usize> {
        let count = self.endpoints.len();
        let start = self
            .preferred
            .as_deref()
            .and_then(|address| self.position(address))
            .unwrap_or(0);
        let rotated = (0..count).map(|offset| (start + offset) % count);
        let (mut order, mut avoided): (Vec<usize>, Vec<usize>) =
            rotated.partition(|index| !self.endpoints[*index].avoided(now));
        avoided.sort_by_key(|index| self.endpoints[*index].avoid_until);
        order.extend(avoided);
        order
    }

    /// The index of `route`'s next endpoint, recorded as tried in this round: the leader it
    /// was sent to, if that member's endpoint is known and untried; for a write, the known
    /// leader's endpoint, if untried and its last attempt did not fail; else the first untried
    /// one in `order`. `None` once every endpoint was tried in this round.
    fn pick(&self, route: &mut Route, now: Instant) -> Option<usize> {
        let hint = route.leader_hint.take();
        let untried = |index: &usize| !route.tried.contains(&self.endpoints[*index].address);
        let endpoint_of = |leader: u64| {
            (0..self.endpoints.len())
                .filter(untried)
                .find(|index| self.endpoints[*index].member_id == Some(leader))
        };
        let hinted = hint.and_then(endpoint_of);
        let leading = || {
            let leader = self.leader.filter(|_| route.to_leader)?;
            endpoint_of(leader).filter(|index| !self.endpoints[*index].failed_last)
        };
        let index = hinted
            .or_else(leading)
            .or_else(|| self.order(now).into_iter().find(untried))?;
        route.tried.push(self.endpoints[index].address.clone());
        Some(index)
    }

    /// Whether `route` has an endpoint left in this round.
    fn untried(&self, route: &Route) -> bool {
        self.endpoints
            .iter()
            .any(|health| !route.tried.contains(&health.address))
    }

    fn answered(&mut self, address: &str, now: Instant) {
        if self.reached(address, now) {
            self.preferred = Some(address.to_owned());
        }
    }

    /// Records that `address` answered; false when it is not an endpoint.
    fn reached(&mut self, address: &str, now: Instant) -> bool {
        let Some(index) = self.position(address) else {
            return false;
        };
        let health = &mut self.endpoints[index];
        health.avoid_until = None;
        health.answered_at = Some(now);
        health.failed_last = false;
        true
    }

    fn leader_is(&mut self, leader_id: u64) {
        self.leader = (leader_id != 0).then_some(leader_id);
    }

    /// Whether a leader is known but no endpoint is known to be its.
    fn leader_unlisted(&self) -> bool {
        self.leader.is_some_and(|leader| {
            !self
                .endpoints
                .iter()
                .any(|health| health.member_id == Some(leader))
        })
    }

    fn failed(&mut self, address: &str, now: Instant) {
        let Some(index) = self.position(address) else {
            return;
        };
        self.endpoints[index].avoid_until = Some(now + AVOID_FOR);
        self.endpoints[index].answered_at = None;
        self.endpoints[index].failed_last = true;
        if self.preferred.as_deref() == Some(address) {
            // Calls that start now go elsewhere at once.
            let next = self.order(now).into_iter().next();
            self.preferred = next.map(|index| self.endpoints[index].address.clone());
        }
    }

    fn answered_recently(&self, address: &str, now: Instant) -> bool {
        self.position(address)
            .and_then(|index| self.endpoints[index].answered_at)
            .is_some_and(|at| now.saturating_duration_since(at) < ANSWER_FRESH_FOR)
    }

    fn identify(&mut self, address: &str, member_id: u64) {
        if member_id == 0 {
            return;
        }
        if let Some(index) = self.position(address) {
            self.endpoints[index].member_id = Some(member_id);
        }
    }

    /// Takes a member list as `(member id, client address)`: a dialable address not yet known
    /// becomes an endpoint after the others; a known one learns its member id; a learned
    /// (non-seed) endpoint that the list no longer names is dropped. An empty list (or one
    /// without a dialable address) changes nothing.
    fn learn(&mut self, members: &[(u64, String)]) {
        let listed: Vec<&(u64, String)> = members
            .iter()
            .filter(|(_, address)| dialable(address))
            .collect();
        if listed.is_empty() {
            return;
        }
        self.endpoints.retain(|health| {
            health.seed || listed.iter().any(|(_, address)| *address == health.address)
        });
        for (member_id, address) in listed {
            match self.position(address) {
                Some(index) => self.endpoints[index].member_id = Some(*member_id),
                None => {
                    let mut health = Health::new(address.clone(), false);
                    health.member_id = Some(*member_id);
                    self.endpoints.push(health);
                }
            }
        }
    }
}

/// One call's (or one stream's) way through the endpoints: which it tried in this round, where
/// a member said the leader is, how many attempts timed out, and the pause before the next
/// round.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    tried: Vec<String>,
    leader_hint: Option<u64>,
    timeouts: u32,
    backoff: Duration,
    /// The budget of the first attempt.
    first_budget: Duration,
    /// A write's: the known leader's endpoint is tried first.
    to_leader: bool,
    /// How long the server may hold each attempt before it answers (`AwaitTurn`).
    held: Duration,
}

impl Default for Route {
    fn default() -> Route {
        Route::new()
    }
}

impl Route {
    pub(crate) fn new() -> Route {
        Route {
            tried: Vec::new(),
            leader_hint: None,
            timeouts: 0,
            backoff: RETRY_BACKOFF_MIN,
            first_budget: ATTEMPT_BUDGET_FIRST,
            to_leader: false,
            held: Duration::ZERO,
        }
    }

    /// This route for a request the server holds up to `wait` before it answers: every
    /// attempt's budget is longer by `wait`.
    pub(crate) fn held_for(mut self, wait: Duration) -> Route {
        self.held = wait;
        self
    }

    /// Whether the server holds this route's attempts on purpose (`held_for`).
    pub(crate) fn held(&self) -> bool {
        !self.held.is_zero()
    }

    /// A write's route: it goes to the known leader first, and its first attempt gets a
    /// quarter of the call's `request_timeout` (at least `ATTEMPT_BUDGET_FIRST`), so that a
    /// large write that is merely slow is not resent (and its load doubled) after a second. A
    /// dead or paused member is noticed sooner by the channel's HTTP/2 keep-alive pings
    /// (`KEEPALIVE_TIMEOUT`), not by this budget.
    pub(crate) fn for_write(request_timeout: Duration) -> Route {
        Route {
            first_budget: (request_timeout / 4).max(ATTEMPT_BUDGET_FIRST),
            to_leader: true,
            ..Route::new()
        }
    }

    /// The budget of the next attempt: `ATTEMPT_BUDGET_FIRST`, doubled for every attempt of
    /// this route that timed out, and longer by the time the server holds it (`held_for`).
    pub(crate) fn budget(&self) -> Duration {
        self.first_budget * (1u32 << self.timeouts.min(BUDGET_DOUBLINGS_MAX)) + self.held
    }

    /// Like `budget`, with the first attempt (before any time-out) given at most `cap`: for
    /// a stream whose silence must be noticed sooner than a call's.
    pub(crate) fn budget_first_at_most(&self, cap: Duration) -> Duration {
        if self.timeouts == 0 {
            self.budget().min(cap)
        } else {
            self.budget()
        }
    }

    /// An attempt timed out: the next one gets twice the budget.
    pub(crate) fn timed_out(&mut self) {
        self.timeouts = self.timeouts.saturating_add(1);
    }

    /// A member said `leader` leads: try its endpoint next, if known.
    pub(crate) fn redirect(&mut self, leader: u64) {
        self.leader_hint = Some(leader);
    }

    /// Starts a new round (every endpoint may be tried again) and returns the pause to take
    /// first, jittered; the next round's pause doubles.
    pub(crate) fn start_round(&mut self) -> Duration {
        self.tried.clear();
        let pause = jittered(self.backoff);
        self.backoff = (self.backoff * 2).min(RETRY_BACKOFF_MAX);
        pause
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routing(addresses: &[&str]) -> Routing {
        Routing::new(
            addresses
                .iter()
                .map(|address| (*address).to_owned())
                .collect(),
        )
    }

    fn picks(routing: &Routing, route: &mut Route, now: Instant) -> Vec<String> {
        std::iter::from_fn(|| routing.pick(route, now))
            .map(|index| routing.endpoints[index].address.clone())
            .collect()
    }

    #[test]
    fn a_round_tries_each_endpoint_once_starting_with_the_preferred() {
        let now = Instant::now();
        let mut routing = routing(&["a", "b", "c", "b"]);
        assert_eq!(
            routing.addresses(),
            ["a", "b", "c"],
            "duplicates are dropped"
        );
        routing.answered("b", now);
        let mut route = Route::new();
        assert_eq!(picks(&routing, &mut route, now), ["b", "c", "a"]);
        assert!(!routing.untried(&route));
        let pause = route.start_round();
        assert!(pause <= RETRY_BACKOFF_MIN, "{pause:?}");
        assert!(routing.untried(&route));
        assert_eq!(picks(&routing, &mut route, now), ["b", "c", "a"]);
    }

    #[test]
    fn a_failed_endpoint_is_tried_last_until_its_avoidance_ends() {
        let now = Instant::now();
        let mut routing = routing(&["a", "b", "c"]);
        routing.answered("a", now);
        routing.failed("a", now);
        routing.failed("b", now + Duration::from_millis(10));
        // The preferred endpoint moved on at once, so new calls start on a healthy one.
        assert_eq!(routing.preferred.as_deref(), Some("c"));
        assert_eq!(
            picks(&routing, &mut Route::new(), now + Duration::from_millis(20)),
            ["c", "a", "b"]
        );
        // Once the avoidance is over, list order (from the preferred) is back.
        let later = now + AVOID_FOR + Duration::from_secs(1);
        assert_eq!(picks(&routing, &mut Route::new(), later), ["c", "a", "b"]);
        routing.answered("a", later);
        assert_eq!(picks(&routing, &mut Route::new(), later), ["a", "b", "c"]);
    }

    #[test]
    fn a_leader_hint_sends_the_next_attempt_to_the_leaders_endpoint() {
        let now = Instant::now();
        let mut routing = routing(&["a", "b", "c"]);
        routing.learn(&[(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        let mut route = Route::new();
        assert_eq!(picks(&routing, &mut route, now).len(), 3);
        let mut route = Route::new();
        assert_eq!(routing.pick(&mut route, now), Some(0));
        route.redirect(3);
        assert_eq!(routing.pick(&mut route, now), Some(2));
        // A hint naming an unknown member, or one already tried, falls back to the order.
        route.redirect(9);
        assert_eq!(routing.pick(&mut route, now), Some(1));
        let mut route = Route::new();
        assert_eq!(routing.pick(&mut route, now), Some(0));
        route.redirect(1);
        assert_eq!(routing.pick(&mut route, now), Some(1));
    }

    #[test]
    fn a_write_goes_to_the_known_leader_unless_its_endpoint_failed_last() {
        let now = Instant::now();
        let write = || Route::for_write(Duration::from_secs(20));
        let mut routing = routing(&["a", "b", "c"]);
        routing.learn(&[(1, "a".into()), (2, "b".into()), (3, "c".into())]);
        routing.answered("a", now);
        assert_eq!(routing.pick(&mut write(), now), Some(0), "no leader known");
        routing.leader_is(3);
        assert_eq!(routing.pick(&mut write(), now), Some(2));
        assert_eq!(picks(&routing, &mut write(), now), ["c", "a", "b"]);
        // Reads keep to the preferred endpoint, and a write's answer does not move it.
        assert_eq!(routing.pick(&mut Route::new(), now), Some(0));
        assert!(routing.reached("c", now));
        assert_eq!(routing.preferred.as_deref(), Some("a"));
        // A redirect's hint still comes first.
        let mut hinted = write();
        hinted.redirect(2);
        assert_eq!(routing.pick(&mut hinted, now), Some(1));
        // Once the leader's endpoint failed, writes go by the order, even after its
        // avoidance, until it answers again.
        routing.failed("c", now);
        let later = now + AVOID_FOR + Duration::from_secs(1);
        assert_eq!(routing.pick(&mut write(), later), Some(0));
        assert!(routing.reached("c", later));
        assert_eq!(routing.pick(&mut write(), later), Some(2));
        // A member that knows no leader clears what the client knew.
        routing.leader_is(0);
        assert_eq!(routing.pick(&mut write(), later), Some(0));
        // A leader whose endpoint the client does not know changes nothing, until a member
        // list names it.
        assert!(!routing.leader_unlisted());
        routing.leader_is(9);
        assert!(routing.leader_unlisted());
        assert_eq!(routing.pick(&mut write(), later), Some(0));
        routing.learn(&[(9, "d".into())]);
        assert!(!routing.leader_unlisted());
        assert_eq!(routing.pick(&mut write(), later), Some(3));
    }

    #[test]
    fn a_write_route_starts_with_a_quarter_of_the_request_timeout() {
        let route = Route::for_write(Duration::from_secs(20));
        assert_eq!(route.budget(), Duration::from_secs(5));
        let short = Route::for_write(Duration::from_secs(2));
        assert_eq!(short.budget(), ATTEMPT_BUDGET_FIRST);
    }

    #[test]
    fn the_budget_doubles_after_each_timeout_and_the_backoff_is_bounded() {
        let mut route = Route::new();
        assert_eq!(route.budget(), ATTEMPT_BUDGET_FIRST);
        route.timed_out();
        assert_eq!(route.budget(), ATTEMPT_BUDGET_FIRST * 2);
        assert_eq!(route.budget_first_at_most(Duration::ZERO), route.budget());
        assert_eq!(
            Route::new().budget_first_at_most(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        for _ in 0..100 {
            route.timed_out();
        }
        assert_eq!(
            route.budget(),
            ATTEMPT_BUDGET_FIRST * (1 << BUDGET_DOUBLINGS_MAX)
        );
        for _ in 0..20 {
            assert!(route.start_round() <= RETRY_BACKOFF_MAX);
        }
        assert_eq!(route.backoff, RETRY_BACKOFF_MAX);
    }

    #[test]
    fn learning_adds_dialable_members_keeps_seeds_and_drops_departed_members() {
        let mut routing = routing(&["seed:7400", "10.0.0.2:7400"]);
        routing.learn(&[
            (1, "10.0.0.1:7400".into()),
            (2, "10.0.0.2:7400".into()),
            (3, String::new()),
            (4, "0.0.0.0:7400".into()),
            (5, "[::]:7400".into()),
            (6, "10.0.0.6:7400".into()),
        ]);
        assert_eq!(
            routing.addresses(),
            [
                "seed:7400",
                "10.0.0.2:7400",
                "10.0.0.1:7400",
                "10.0.0.6:7400"
            ]
        );
        assert_eq!(routing.endpoints[1].member_id, Some(2));
        // Member 6 was removed: its learned endpoint goes; the seeds stay whatever the list.
        routing.learn(&[(1, "10.0.0.1:7400".into())]);
        assert_eq!(
            routing.addresses(),
            ["seed:7400", "10.0.0.2:7400", "10.0.0.1:7400"]
        );
        // A list with nothing dialable changes nothing.
        routing.learn(&[(4, "0.0.0.0:7400".into())]);
        assert_eq!(routing.addresses().len(), 3);
    }

    #[test]
    fn unspecified_and_empty_addresses_are_not_dialable() {
        for address in [
            "",
            " ",
            "0.0.0.0:7400",
            "[::]:7400",
            "http://0.0.0.0:7400",
            ":7400",
        ] {
            assert!(!dialable(address), "{address:?}");
        }
        for address in [
            "10.0.0.1:7400",
            "coord-0.coord:7400",
            "[::1]:7400",
            "http://10.0.0.1:7400/",
            "localhost",
        ] {
            assert!(dialable(address), "{address:?}");
        }
    }

    #[test]
    fn an_endpoint_answered_recently_is_fresh_and_a_failure_clears_it() {
        let now = Instant::now();
        let mut routing = routing(&["a"]);
        assert!(!routing.answered_recently("a", now));
        routing.answered("a", now);
        assert!(routing.answered_recently("a", now + ANSWER_FRESH_FOR / 2));
        assert!(!routing.answered_recently("a", now + ANSWER_FRESH_FOR));
        routing.failed("a", now);
        assert!(!routing.answered_recently("a", now));
        routing.identify("a", 7);
        assert_eq!(routing.endpoints[0].member_id, Some(7));
    }
}
