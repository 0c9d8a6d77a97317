//! A stand-in for the bridge's side of served subscriptions in the proxy's state machine tests:
//! which topics are logged, and nothing else.

use crate::served::{BoxFuture, Feed, LoggedTopics, Resumed, SessionClaim, SessionStoreError};

/// The topics one filter matches logged (`#`, or `PREFIX/#`); no feed is ever opened in
/// these tests.
#[derive(Debug)]
pub(crate) struct Logged(pub(crate) &'static str);

impl LoggedTopics for Logged {
    fn covers(&self, filter: &str) -> bool {
        match self.0.strip_suffix('#') {
            Some(prefix) => filter.starts_with(prefix) && !filter.starts_with('$'),
            None => filter == self.0,
        }
    }
    fn overlaps(&self, filter: &str) -> bool {
        mqws_topic::filters_overlap(self.0, filter)
    }
    fn open(&self) -> Box<dyn Feed> {
        panic!("no feed in a state machine test")
    }
    fn epoch(&self) -> String {
        panic!("no log in a state machine test")
    }
    fn resume(
        &self,
        _: &str,
        _: u64,
        _: &[String],
    ) -> BoxFuture<'static, Result<Resumed, SessionStoreError>> {
        panic!("no feed in a state machine test")
    }
    fn load_session(
        &self,
        _: &str,
    ) -> BoxFuture<'static, Result<Option<Vec<u8>>, SessionStoreError>> {
        panic!("no sessions in a state machine test")
    }
    fn save_session(
        &self,
        _: &str,
        _: (Option<&str>, SessionClaim),
        _: Vec<u8>,
        _: (u64, Option<u64>),
        _: bool,
    ) -> BoxFuture<'static, Result<bool, SessionStoreError>> {
        panic!("no sessions in a state machine test")
    }
    fn forget_session(&self, _: &str, _: u64) -> BoxFuture<'static, Result<(), SessionStoreError>> {
        panic!("no sessions in a state machine test")
    }
    fn session_count(&self) -> usize {
        0
    }
    fn sessions_of(&self, _: &str) -> usize {
        0
    }
}
