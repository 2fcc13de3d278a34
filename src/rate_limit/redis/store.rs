//! The connection to Redis a limiter decides through.

use std::fmt;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisResult};

use super::script::{Params, Verdict};

/// A Redis connection for [`RateLimitBuilder::redis`](crate::rate_limit::RateLimitBuilder::redis).
///
/// Every kind it wraps is multiplexed: one connection carries every
/// concurrent decision, pipelined, and cloning the store is cheap (clones
/// share the connection). Build one with [`RedisStore::open`] (a
/// [`ConnectionManager`] that connects lazily and reconnects by itself), or
/// from a [`ConnectionManager`], a [`MultiplexedConnection`] or a cluster
/// connection you configured yourself.
///
/// ```
/// use palisade::rate_limit::redis::RedisStore;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), redis::RedisError> {
/// // Connects on first use: building never waits for Redis.
/// let store = RedisStore::open("redis://127.0.0.1:6379")?;
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
}

#[derive(Clone)]
enum Conn {
    Manager(ConnectionManager),
    Multiplexed(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.conn {
            Conn::Manager(_) => "ConnectionManager",
            Conn::Multiplexed(_) => "MultiplexedConnection",
            Conn::Cluster(_) => "ClusterConnection",
        };
        f.debug_struct("RedisStore").field("conn", &kind).finish()
    }
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://host:port/db`), through a
    /// [`ConnectionManager`] that connects on first use and reconnects in
    /// the background after a connection error. Fails only on a malformed
    /// URL, or when called outside a Tokio runtime (the manager's
    /// reconnection task needs one).
    ///
    /// Connection attempts time out after 1 s and are retried at most twice
    /// per failure: the limiter's own timeout and breaker (see
    /// [`RedisBuilder`](super::RedisBuilder)) bound how long a decision
    /// waits, whatever the connection does.
    pub fn open(url: &str) -> RedisResult<Self> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(redis::RedisError::from((
                redis::ErrorKind::Client,
                "RedisStore::open needs a Tokio runtime",
            )));
        }
        let client = Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self::from(manager))
    }

    /// Runs one decision's script.
    pub(crate) async fn run(
        &self,
        params: Params,
        key: &[u8],
        cost: u64,
        now_us: Option<u64>,
    ) -> RedisResult<Verdict> {
        let script = params.script();
        let mut call = script.key(key);
        match now_us {
            Some(now) => call.arg(now),
            None => call.arg(""),
        };
        let [a, b] = params.args();
        call.arg(a).arg(b).arg(cost);
        let reply: Vec<i64> = match &self.conn {
            Conn::Manager(c) => call.invoke_async(&mut c.clone()).await?,
            Conn::Multiplexed(c) => call.invoke_async(&mut c.clone()).await?,
            Conn::Cluster(c) => call.invoke_async(&mut c.clone()).await?,
        };
        Verdict::from_reply(&reply).ok_or_else(|| {
            redis::RedisError::from((
                redis::ErrorKind::Client,
                "unexpected rate-limit script reply",
            ))
        })
    }

    /// Whether this is a Redis Cluster connection (failures are then
    /// tracked per hash slot).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.conn, Conn::Cluster(_))
    }

    /// A bare `PING` on this store's connection (for benchmarks and health
    /// checks).
    pub async fn ping(&self) -> RedisResult<()> {
        let cmd = redis::cmd("PING");
        match &self.conn {
            Conn::Manager(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Multiplexed(c) => cmd.query_async(&mut c.clone()).await,
            Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
        }
    }
}

impl From<ConnectionManager> for RedisStore {
    fn from(c: ConnectionManager) -> Self {
        Self {
            conn: Conn::Manager(c),
        }
    }
}

impl From<MultiplexedConnection> for RedisStore {
    fn from(c: MultiplexedConnection) -> Self {
        Self {
            conn: Conn::Multiplexed(c),
        }
    }
}

impl From<ClusterConnection> for RedisStore {
    /// Every decision touches one key, so every decision goes to the one
    /// node that holds its slot.
    fn from(c: ClusterConnection) -> Self {
        Self {
            conn: Conn::Cluster(c),
        }
    }
}
