//! A fake WeChat / WeCom API server for tests and local development.
//!
//! It speaks the real paths and JSON shapes (protocol.md §8–§11) with just enough of the
//! platform's rules to exercise a client's error handling: tokens are random, expire, and
//! are refused with 40014 (unknown) or 42001 (expired); customer-service messages need a
//! window opened with `POST /fake/window` (else 45015, over the count 45047); tag batches
//! take at most 50 openids (40032). Every API call is recorded (`GET /fake/calls`), and
//! faults queued with `POST /fake/faults` (`[{"errcode": -1}, {"delay_ms": 3000},
//! {"drop": true}, {"status": 502}, {"errcode": 40001, "path": "/cgi-bin/tags/get"}]`)
//! are applied one per call, in order: a fault without `path` hits the very next call, a
//! token fetch included. `POST /fake/expire_tokens` ages every token.
//!
//! Follower populations let a client import an account's existing followers. `POST
//! /fake/followers` `{"appid": "wx…", "count": 100000, "seed": 1, "union_seed": 0,
//! "unionid": true, "tags": {"老客": 10}}` replaces the population of `appid` (omitted: of
//! every AppID without its own; `seed`, `union_seed` default 0, `unionid` true, `tags` a
//! name → N map: every follower whose index is a multiple of N carries the tag, created in
//! the tag table if missing); it answers `{"appid", "count", "tags": {name: id}}`. Follower
//! `i` derives from `(seed, i)`: a 28-character openid starting with `o` (no order to rely
//! on), unionid `ou…` from `(union_seed, i)` only, subscribe_time, subscribe_scene,
//! qr_scene_str (for ADD_SCENE_QR_CODE only), remark. Nothing is stored per follower, so a
//! million are cheap. The token's owner picks the population:
//! - `GET /cgi-bin/user/get?next_openid=`: `{"total", "count", "data": {"openid": […]},
//!   "next_openid": <last of the page>}`, 10,000 a page, subscribed followers only; past
//!   the last one `{"total", "count": 0, "next_openid": ""}`; an openid not in the
//!   population: 40003.
//! - `POST /cgi-bin/user/info/batchget` `{"user_list": [{"openid", "lang"}]}`: 1–100
//!   (none: 47001, more: 40032), an openid not in the population fails the call with
//!   40003; `{"user_info_list": […]}` in request order; one who left answers only
//!   `{"subscribe": 0, "openid", "unionid", "tagid_list": []}`. `GET /cgi-bin/user/info`
//!   answers the same for the population's openids (any other openid: a plain follower).
//! - `POST /fake/followers/unsubscribe` (and `/subscribe`) `{"appid"?, "openids": […]}`:
//!   followers leave (come back); `{"changed": n}`, 400 for an openid not in the population.
//! - `GET /fake/followers?appid=&offset=0&limit=100`: `{"total", "openids", "unionids"}`,
//!   subscribed ones in population order (`unionids` empty without unionids).
//!
//! WeCom external contacts likewise: `POST /fake/contacts` `{"corpid"?, "staff":
//! ["zhangsan", "lisi"], "count": 1000, "seed": 1, "union_seed": 0, "unionid": true,
//! "shared_every": 5, "tags": [{"name": "VIP", "group": "客户等级", "every": 3, "id"?:
//! "et…"}]}`: contact `i` (external_userid `wm…`, the same unionid as follower `i` of an
//! official population with the same `union_seed`) is added by `staff[i % len]`, and
//! every `shared_every`th also by the next staff member; `GET /fake/contacts?corpid=&
//! offset=&limit=` lists them. The token's owner picks the contacts for
//! `GET /cgi-bin/externalcontact/get_follow_user_list`, `POST
//! /cgi-bin/externalcontact/batch/get_by_user` (`userid_list` 1–100, `limit` 1–100,
//! default 50, else 40058; an unknown userid 60111, an unknown cursor 40058; one entry per
//! (contact, staff member), `next_cursor` "" at the end) and `POST
//! /cgi-bin/externalcontact/get_corp_tag_list` (optional `tag_id` / `group_id` filters).
//!
//! Credentials are not checked: any AppID and secret get a token (inject 40125 to test a
//! wrong secret). State lives in memory, behind one std `Mutex`: every handler holds it for
//! a few map operations and never across an await (a delay fault sleeps after releasing it).

mod official;
mod population;
mod routes;
mod state;
mod wecom;

pub use population::{
    ContactsPage, ContactsRequest, CorpTagSpec, FollowersPage, PopulationRequest,
    SubscriptionRequest,
};
pub use state::{Fault, HoldRequest, RecordedCall, WindowRequest};

use std::collections::BTreeMap;
use std::io;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use actix_web::{web, App, HttpServer};

use state::State;

/// The fake's configuration; [`FakeWechat::start`] runs it with the defaults.
#[derive(Debug, Clone)]
pub struct FakeWechat {
    /// How long an issued token lives (WeChat: 7200 s).
    pub token_lifetime: Duration,
}

impl Default for FakeWechat {
    fn default() -> Self {
        FakeWechat {
            token_lifetime: Duration::from_secs(7200),
        }
    }
}

/// The state shared by the server's workers and the handle, and the signal that lets
/// held calls go.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<State>>, Arc<tokio::sync::Notify>);

impl Shared {
    fn release(&self) {
        self.lock().hold = None;
        self.1.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Handlers only do map operations under the lock; a panic there leaves no
        // half-written state worth refusing, so a poisoned lock is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl FakeWechat {
    /// Starts a fake with the default settings on `bind` (`127.0.0.1:0` for tests). Must be
    /// called inside a tokio runtime: the server runs as a task of it.
    pub fn start(bind: &str) -> io::Result<FakeWechatHandle> {
        FakeWechat::default().serve(bind)
    }

    pub fn serve(&self, bind: &str) -> io::Result<FakeWechatHandle> {
        let shared = Shared(
            Arc::new(Mutex::new(State::new(self.token_lifetime))),
            Arc::new(tokio::sync::Notify::new()),
        );
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let data = web::Data::new(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .configure(routes::configure)
        })
        // Two workers: delay faults sleep asynchronously, so even one would serve others
        // meanwhile; two keep a test's burst from queueing behind one accept loop.
        .workers(2)
        // Tests start many fakes; the owner stops them (the CLI on Ctrl-C).
        .disable_signals()
        // Stopping must not wait for a request held by a long delay fault.
        .shutdown_timeout(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        Ok(FakeWechatHandle {
            base_url: format!("http://{addr}"),
            shared,
            server: handle,
            task,
        })
    }
}

/// A running fake: its URL, direct access to what it recorded, and the way to stop it.
pub struct FakeWechatHandle {
    base_url: String,
    shared: Shared,
    server: actix_web::dev::ServerHandle,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

impl FakeWechatHandle {
    /// `http://127.0.0.1:PORT`: the `api_base` for clients.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Every API call so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.shared.lock().calls.clone()
    }

    /// How many calls went to `path`.
    pub fn calls_to(&self, path: &str) -> usize {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.path == path)
            .count()
    }

    /// Queues faults, as `POST /fake/faults` does.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.lock().faults.extend(faults);
    }

    /// Opens a follower's customer-service window, as `POST /fake/window` does.
    pub fn open_window(&self, openid: &str, messages: u32) {
        self.shared.lock().open_window(&WindowRequest {
            openid: openid.to_string(),
            messages,
            seconds: 48 * 3600,
        });
    }

    /// The calls to `path` that were accepted (errcode 0), oldest first.
    pub fn accepted(&self, path: &str) -> Vec<RecordedCall> {
        self.shared
            .lock()
            .calls
            .iter()
            .filter(|c| c.path == path && c.errcode == Some(0))
            .cloned()
            .collect()
    }

    /// Whether the follower carries the tag called `name` here (created by `tags/create`
    /// or a population's), as `batchtagging` / `batchuntagging` left it.
    pub fn has_tag(&self, openid: &str, name: &str) -> bool {
        self.shared
            .lock()
            .tags
            .values()
            .any(|t| t.name == name && t.contains(openid))
    }

    /// The bytes of a temporary media upload (a poster), by its media_id.
    pub fn media(&self, media_id: &str) -> Option<Vec<u8>> {
        self.shared.lock().media.get(media_id).cloned()
    }

    /// Template messages delivered: repeats of a `client_msg_id` are not counted.
    pub fn templates_delivered(&self) -> u64 {
        self.shared.lock().templates_delivered
    }

    /// Followers reached by mass sends (repeats refused with 45065 not counted).
    pub fn mass_recipients(&self) -> u64 {
        self.shared.lock().mass_recipients
    }

    /// Holds calls to `path` past the first `after`, as `POST /fake/hold` does.
    pub fn hold(&self, path: &str, after: usize) {
        self.shared.lock().hold = Some(HoldRequest {
            path: path.to_string(),
            after,
        });
    }

    /// Ages every issued token past its expiry, as `POST /fake/expire_tokens` does.
    pub fn expire_tokens(&self) {
        self.shared.lock().expire_tokens();
    }

    /// Calls hanging under the hold now.
    pub fn held(&self) -> usize {
        self.shared.lock().held
    }

    /// Ends the hold: held calls are dropped unanswered.
    pub fn release(&self) {
        self.shared.release();
    }

    /// Replaces a follower population, as `POST /fake/followers` does; answers the ids of
    /// its tags by name.
    pub fn populate(&self, req: PopulationRequest) -> Result<BTreeMap<String, i64>, String> {
        self.shared.lock().populate(&req)
    }

    /// Unsubscribes followers of the population `appid` reads (its own, else the default
    /// one), as `POST /fake/followers/unsubscribe` does; answers how many changed. Every
    /// openid must be in the population.
    pub fn unsubscribe(&self, appid: Option<&str>, openids: &[String]) -> Result<usize, String> {
        self.shared.lock().set_subscribed(appid, openids, false)
    }

    /// Undoes [`FakeWechatHandle::unsubscribe`], as `POST /fake/followers/subscribe` does.
    pub fn subscribe(&self, appid: Option<&str>, openids: &[String]) -> Result<usize, String> {
        self.shared.lock().set_subscribed(appid, openids, true)
    }

    /// Subscribed followers `offset..offset + limit`, as `GET /fake/followers` answers.
    pub fn followers(&self, appid: Option<&str>, offset: u64, limit: u64) -> FollowersPage {
        self.shared.lock().followers_page(appid, offset, limit)
    }

    /// Replaces a corp's external contacts, as `POST /fake/contacts` does; answers its
    /// corp tags as (id, name).
    pub fn populate_contacts(&self, req: ContactsRequest) -> Result<Vec<(String, String)>, String> {
        self.shared.lock().populate_contacts(&req)
    }

    /// Contacts `offset..offset + limit`, as `GET /fake/contacts` answers.
    pub fn contacts(&self, corpid: Option<&str>, offset: u64, limit: u64) -> ContactsPage {
        self.shared.lock().contacts_page(corpid, offset, limit)
    }

    /// Stops the server without waiting for in-flight requests.
    pub async fn stop(self) {
        self.server.stop(false).await;
        let _ = self.task.await;
    }

    /// Serves until the server stops (by [`FakeWechatHandle::stop`] from a clone of the
    /// server handle, or an error).
    pub async fn stopped(self) -> io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }

    pub fn server_handle(&self) -> actix_web::dev::ServerHandle {
        self.server.clone()
    }
}
