//! The two Lua scripts (token bucket, sliding-window counter) and what they
//! answer.
//!
//! # Implementation details
//!
//! Each script is the same arithmetic as its in-memory twin
//! ([`gcra`](super::super::gcra), [`sliding_window`](super::super::sliding_window)),
//! run atomically in Redis on one key, on the server's clock (`TIME`), so
//! every instance of a fleet decides on one clock.
//!
//! **Units.** Lua numbers in Redis are doubles, exact for integers up to
//! 2^53. Time is kept in whole **microseconds since the Unix epoch** (the
//! resolution `TIME` has): about 1.8e15 today, below 2^53 until the year
//! 2255. `build()` bounds every product the scripts form (a token bucket's
//! capacity `B <= 2^51` µs; a window's `4 * limit * W <= 2^53`) so that no
//! intermediate value leaves the exact range, and every stored or returned
//! number is written with `%.0f` (Lua's default `tostring` keeps 14
//! significant digits and would round a time to 10 µs).
//!
//! **Expiry.** Every write sets `PX` to the time at which the key's state
//! equals a new key's (the in-memory limiter's `idle_at`), and at least one
//! second, so idle keys vanish and an expired key behaves exactly like a
//! new one (a key kept past its idle time does too). The floor keeps a
//! key whose idle time is microseconds away from vanishing between two
//! calls of a schedule replayed at chosen instants (the tests' `now`
//! override). A refusal writes nothing.
//!
//! **Answer.** `{admitted, retry_after_us, remaining, free_after_us}`:
//! `remaining` is the capacity left (after the admission, if admitted);
//! `free_after_us` is how long until a request of cost 1 could pass (0 if
//! one could now), which the local-denial cache uses: an admission that
//! used the last unit already tells the instance to stop asking.

use std::sync::LazyLock;

use redis::Script;

/// Token bucket. `KEYS[1]` the bucket; `ARGV`: now (µs, empty for the
/// server's `TIME`), emission interval `T` (µs), capacity `B = burst * T`
/// (µs), cost.
const GCRA: &str = r"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local T = tonumber(ARGV[2])
local B = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local base = math.max(tat, now)
local new_tat = base + cost * T
local at = math.max(new_tat - B, now)
if at <= now then
  local ttl = math.max(1000, math.ceil((new_tat - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl))
  local rem = math.max(0, math.floor((now + B - new_tat) / T))
  return {1, 0, rem, math.max(new_tat + T - B, now) - now}
end
local remaining = math.max(0, math.floor((now + B - base) / T))
local free = math.max(base + T - B, now) - now
return {0, at - now, remaining, free}
";

/// Sliding-window counter. `KEYS[1]` the counts, stored as `"idx prev
/// cur"`; `ARGV`: now (µs, empty for `TIME`), window `W` (µs), limit, cost.
const WINDOW: &str = r"
local now
if ARGV[1] == '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
else
  now = tonumber(ARGV[1])
end
local W = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local idx, prev, cur = 0, 0, 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local i, p, c = string.match(stored, '^(%d+) (%d+) (%d+)$')
  if i then idx, prev, cur = tonumber(i), tonumber(p), tonumber(c) end
end
local k = math.floor(now / W)
local e
if idx >= k then
  if idx == k then e = now - k * W else e = 0 end
else
  if idx + 1 == k then prev = cur else prev = 0 end
  cur = 0
  idx = k
  e = now - k * W
end
local function earliest(c)
  local need = limit - c
  local p, q = prev, cur
  for j = idx, idx + 1 do
    local start = j * W
    if q <= need then
      if p == 0 then return start end
      local room = math.floor((need - q) * W / p)
      local off = math.max(0, W - room)
      if off < W then return start + off end
    end
    p, q = q, 0
  end
  return (idx + 2) * W
end
if prev * (W - e) + (cur + cost) * W <= limit * W then
  cur = cur + cost
  local ttl = math.max(1000, math.ceil(((idx + 2) * W - now) / 1000))
  redis.call('SET', KEYS[1], string.format('%.0f %.0f %.0f', idx, prev, cur),
    'PX', string.format('%.0f', ttl))
  local rem = math.floor(math.max(0, limit * W - prev * (W - e) - cur * W) / W)
  local free = 0
  if rem < 1 then free = math.max(1, earliest(1) - now) end
  return {1, 0, rem, free}
end
local used = prev * (W - e) + cur * W
local remaining = math.floor(math.max(0, limit * W - used) / W)
local retry = math.max(1, earliest(cost) - now)
local free = math.max(1, earliest(1) - now)
return {0, retry, remaining, free}
";

pub(super) static GCRA_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GCRA));
pub(super) static WINDOW_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(WINDOW));

/// The largest token-bucket capacity, in µs: `now + 2B` stays below 2^53
/// for centuries.
pub(super) const MAX_CAPACITY_US: u64 = 1 << 51;
/// The largest `limit * window` (µs) of a window: `4 * limit * W <= 2^53`.
pub(super) const MAX_WINDOW_PRODUCT: u64 = 1 << 51;

/// One algorithm's constants, in the scripts' units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Params {
    /// Emission interval and capacity, µs.
    Gcra { t: u64, b: u64 },
    /// Window length (µs) and limit.
    Window { w: u64, limit: u64 },
}

/// The script's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Admit {
        /// µs until a request of cost 1 would pass (0: now).
        free_after: u64,
    },
    Deny {
        /// µs until this request would pass.
        retry_after: u64,
        remaining: u64,
        /// µs until a request of cost 1 would pass.
        free_after: u64,
    },
}

impl Verdict {
    /// Reads the script's four integers.
    pub(super) fn from_reply(reply: &[i64]) -> Option<Self> {
        let &[admitted, retry, remaining, free] = reply else {
            return None;
        };
        let u = |v: i64| u64::try_from(v).ok();
        match admitted {
            1 => Some(Self::Admit {
                free_after: u(free)?,
            }),
            0 => Some(Self::Deny {
                retry_after: u(retry)?.max(1),
                remaining: u(remaining)?,
                free_after: u(free)?,
            }),
            _ => None,
        }
    }
}

impl Params {
    pub(super) fn script(&self) -> &'static Script {
        match self {
            Self::Gcra { .. } => &GCRA_SCRIPT,
            Self::Window { .. } => &WINDOW_SCRIPT,
        }
    }

    /// The script's two constant arguments.
    pub(super) fn args(&self) -> [u64; 2] {
        match *self {
            Self::Gcra { t, b } => [t, b],
            Self::Window { w, limit } => [w, limit],
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::Verdict;

    #[test]
    fn replies() {
        assert_eq!(
            Verdict::from_reply(&[1, 0, 3, 0]),
            Some(Verdict::Admit { free_after: 0 })
        );
        assert_eq!(
            Verdict::from_reply(&[0, 0, 0, 5]),
            Some(Verdict::Deny {
                retry_after: 1,
                remaining: 0,
                free_after: 5
            })
        );
        // Anything else is an error, never a panic.
        for bad in [
            &[][..],
            &[1, 0, 0],
            &[2, 0, 0, 0],
            &[0, -1, 0, 0],
            &[1, 0, 0, -5],
        ] {
            assert_eq!(Verdict::from_reply(bad), None, "{bad:?}");
        }
    }
}
