//! The Lua scripts every node runs in Redis, one atomic step each, and the
//! names of each room's keys, in the order the scripts take them.
//!
//! It owns what lives in Redis and how it is laid out (see the table in
//! [`crate::store::redis`]); it does not run the scripts or read their
//! replies, which is the mirror's and the directory's work.

use redis::Script;

use crate::core::names::RoomName;

/// What every script of a room begins with: its keys, and the steps they
/// share. Keys: 1 epoch, 2 seq, 3 stream, 4 messages, 5 names, 6 sessions,
/// 7 leases, 8 buckets, 9 the index of every session's room, 10 the
/// stream's bytes, 11 the ids each session sent last. Arguments: 1 the
/// epoch the node reads under, 2 a new epoch to set if Redis has none, 3
/// the stream's limits, `<--history> <--room-bytes>`; each script's own
/// come after.
///
/// `append` trims the stream as it adds: the oldest entries go until it
/// holds at most `--history` events and `--room-bytes` of JSON, the newest
/// always kept. The bytes are counted in key 10 as entries are added and
/// trimmed, so a trim reads only the entries it removes.
macro_rules! prelude {
    () => {
        r#"
local function foreign_epoch()
  local epoch = redis.call('GET', KEYS[1])
  if not epoch then
    redis.call('SET', KEYS[1], ARGV[2])
    return ARGV[2]
  end
  if epoch ~= ARGV[1] then
    return epoch
  end
  return false
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function trim(added)
  local history, budget = string.match(ARGV[3], '^(%d+) (%d+)$')
  history, budget = tonumber(history), tonumber(budget)
  local bytes = redis.call('INCRBY', KEYS[10], added)
  local len = redis.call('XLEN', KEYS[3])
  local dropped, freed, from, last = 0, 0, '-', nil
  while len - dropped > 1 and (len - dropped > history or bytes - freed > budget) do
    local entries = redis.call('XRANGE', KEYS[3], from, '+', 'COUNT', 64)
    if #entries == 0 then
      break
    end
    for _, entry in ipairs(entries) do
      if len - dropped <= 1 or (len - dropped <= history and bytes - freed <= budget) then
        break
      end
      dropped = dropped + 1
      freed = freed + #entry[2][2]
      last = entry[1]
      from = '(' .. last
    end
  end
  if last then
    redis.call('XTRIM', KEYS[3], 'MINID', string.match(last, '^(%d+)') .. '-1')
  end
  if len - dropped <= 1 then
    -- Only the newest is left: count it exactly, whatever went before.
    redis.call('SET', KEYS[10], added)
  elseif freed > 0 then
    redis.call('DECRBY', KEYS[10], freed)
  end
end
local function append(json, message)
  local seq = redis.call('INCR', KEYS[2])
  json = '{"seq":' .. seq .. string.sub(json, 9)
  redis.call('XADD', KEYS[3], seq .. '-0', 'e', json)
  trim(#json)
  if message then
    redis.call('LPUSH', KEYS[4], json)
    redis.call('LTRIM', KEYS[4], 0, 99)
  end
  return {seq, json}
end
local function leave(id, now)
  if redis.call('ZREM', KEYS[7], id) == 0 then
    return false
  end
  local name = redis.call('HGET', KEYS[6], id)
  redis.call('HDEL', KEYS[6], id)
  redis.call('HDEL', KEYS[8], id)
  redis.call('HDEL', KEYS[9], id)
  redis.call('HDEL', KEYS[11], id)
  if not name then
    return false
  end
  redis.call('HDEL', KEYS[5], string.lower(name))
  return append('{"seq":0,"ts":' .. now .. ',"type":"leave","name":"' .. name .. '"}', false)
end
"#
    };
}

/// The first step of every script that writes: nothing is written under an
/// epoch the node does not read under; `{0, epoch}` tells it Redis's.
macro_rules! epoch_guard {
    () => {
        r#"
local foreign = foreign_epoch()
if foreign then
  return {0, foreign}
end
"#
    };
}

/// Appends a group of events, in order. Arguments after the prelude's: 4
/// how many ids each session's entry in `sent` keeps ([`SENT_IDS`]), 5 how
/// many bytes of ids ([`SENT_ID_BYTES`]); then six for each event: its JSON
/// with `"seq":0`, `1` for a chat message, the session it is from (or
/// empty), that session's lease in ms, its rate limit per second (0 for
/// none), and the message's idempotency key (or empty). Returns `{code,
/// text}` for each event in turn: `{seq, json}` when stored, `{-2, seq}`
/// when its session sent its key before and it was stored as that seq (it
/// is not stored again, and spends no rate), `{-1, code}` when its session
/// is refused; or `{0, epoch}` alone, appending nothing, when the epoch is
/// not the node's.
///
/// A session's keys are one field of `sent`, a JSON array `[key, seq, key,
/// seq, ...]`, oldest first, which goes with the session's leave.
///
/// [`SENT_IDS`]: crate::core::directory::SENT_IDS
/// [`SENT_ID_BYTES`]: crate::core::directory::SENT_ID_BYTES
pub const APPEND: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
local now = now_ms()
local max_ids, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local function sent_by(id)
  local sent = redis.call('HGET', KEYS[11], id)
  if sent then
    return cjson.decode(sent)
  end
  return {}
end
local function sent_as(sent, key)
  for j = 1, #sent, 2 do
    if sent[j] == key then
      return sent[j + 1]
    end
  end
  return false
end
local function remember(id, sent, key, seq)
  sent[#sent + 1] = key
  sent[#sent + 1] = string.format('%d', seq)
  local bytes = 0
  for j = 1, #sent, 2 do
    bytes = bytes + #sent[j]
  end
  while #sent > 2 * max_ids or bytes > max_bytes do
    bytes = bytes - #sent[1]
    table.remove(sent, 1)
    table.remove(sent, 1)
  end
  redis.call('HSET', KEYS[11], id, cjson.encode(sent))
end
local function admit(id, lease, rate, repeated)
  if id == '' then
    return false
  end
  local deadline = redis.call('ZSCORE', KEYS[7], id)
  if (not deadline) or tonumber(deadline) < now then
    return 'unknown_session'
  end
  if repeated then
    redis.call('ZADD', KEYS[7], 'XX', now + lease, id)
    return false
  end
  if rate > 0 then
    local burst = rate * 2
    local tokens, since = burst, now
    local bucket = redis.call('HGET', KEYS[8], id)
    if bucket then
      local space = string.find(bucket, ' ')
      tokens = tonumber(string.sub(bucket, 1, space - 1))
      since = tonumber(string.sub(bucket, space + 1))
    end
    tokens = math.min(burst, tokens + (now - since) * rate / 1000)
    if tokens < 1 then
      redis.call('HSET', KEYS[8], id, tokens .. ' ' .. now)
      return 'rate_limited'
    end
    redis.call('HSET', KEYS[8], id, (tokens - 1) .. ' ' .. now)
  end
  redis.call('ZADD', KEYS[7], 'XX', now + lease, id)
  return false
end
local replies = {}
for i = 6, #ARGV, 6 do
  local id, key = ARGV[i + 2], ARGV[i + 5]
  local sent, repeated = nil, false
  if id ~= '' and key ~= '' then
    sent = sent_by(id)
    repeated = sent_as(sent, key)
  end
  local refused = admit(id, tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4]), repeated)
  if refused then
    replies[#replies + 1] = -1
    replies[#replies + 1] = refused
  elseif repeated then
    replies[#replies + 1] = -2
    replies[#replies + 1] = repeated
  else
    local stored = append(ARGV[i], ARGV[i + 1] == '1')
    if sent then
      remember(id, sent, key, stored[1])
    end
    replies[#replies + 1] = stored[1]
    replies[#replies + 1] = stored[2]
  end
end
return replies
"#
);

/// Admits a session and appends its join. Arguments after the prelude's: 4
/// the join's JSON with `"seq":0`, 5 the session, 6 its name, 7 its lease
/// in ms, 8 the room's name, 9 how many names to list at most. A holder of
/// the name whose lease ran out leaves first. Returns `{seq, json, online,
/// names}`, `{0, epoch}` or `{-1, 'name_taken'}`.
pub const JOIN: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
local now = now_ms()
local key = string.lower(ARGV[6])
local holder = redis.call('HGET', KEYS[5], key)
if holder then
  local deadline = redis.call('ZSCORE', KEYS[7], holder)
  if deadline and tonumber(deadline) >= now then
    return {-1, 'name_taken'}
  end
  if not leave(holder, now) then
    redis.call('HDEL', KEYS[5], key)
  end
end
local id = ARGV[5]
redis.call('HSET', KEYS[5], key, id)
redis.call('HSET', KEYS[6], id, ARGV[6])
redis.call('ZADD', KEYS[7], now + tonumber(ARGV[7]), id)
redis.call('HSET', KEYS[9], id, ARGV[8])
local joined = append(ARGV[4], false)
local online = redis.call('HLEN', KEYS[6])
local names
if online <= tonumber(ARGV[9]) then
  names = redis.call('HVALS', KEYS[6])
else
  names = redis.call('HRANDFIELD', KEYS[5], tonumber(ARGV[9]))
  for i, k in ipairs(names) do
    names[i] = redis.call('HGET', KEYS[6], redis.call('HGET', KEYS[5], k))
  end
  names[#names + 1] = ARGV[6]
end
return {joined[1], joined[2], online, names}
"#
);

/// Ends a session. Arguments after the prelude's: 4 the session. Returns
/// `{seq, json}` of its leave, `{0, epoch}`, or `{-1, 'unknown_session'}`
/// if it had ended already.
pub const LEAVE: &str = concat!(
    prelude!(),
    epoch_guard!(),
    r#"
return leave(ARGV[4], now_ms()) or {-1, 'unknown_session'}
"#
);

/// Ends the sessions whose lease ran out, at most argument 4 of them, under
/// whatever epoch Redis has, and keeps the room's keys for argument 5 ms
/// more. Returns `{ended, online}`.
pub const REAP: &str = concat!(
    prelude!(),
    r#"
for i = 1, 8 do
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
redis.call('PEXPIRE', KEYS[10], ARGV[5])
redis.call('PEXPIRE', KEYS[11], ARGV[5])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', '(' .. now, 'LIMIT', 0, tonumber(ARGV[4]))
local ended = 0
if #expired > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
  for _, id in ipairs(expired) do
    if leave(id, now) then
      ended = ended + 1
    end
  end
end
return {ended, redis.call('ZCARD', KEYS[7])}
"#
);

/// Renews leases. Arguments after the prelude's: 4 the lease in ms, then
/// the sessions. Returns the sessions that are no longer live.
pub const RENEW: &str = concat!(
    prelude!(),
    r#"
local now = now_ms()
local deadline = now + tonumber(ARGV[4])
local gone = {}
for i = 5, #ARGV do
  local current = redis.call('ZSCORE', KEYS[7], ARGV[i])
  if current and tonumber(current) >= now then
    redis.call('ZADD', KEYS[7], deadline, ARGV[i])
  else
    gone[#gone + 1] = ARGV[i]
  end
end
return gone
"#
);

/// Finds a session. Arguments after the prelude's: 4 the session. Returns
/// `{1, name}` if live in this room, `{2, room}` if live in another, `{0,
/// ''}` otherwise.
pub const LOOKUP: &str = concat!(
    prelude!(),
    r#"
local id = ARGV[4]
local deadline = redis.call('ZSCORE', KEYS[7], id)
if deadline and tonumber(deadline) >= now_ms() then
  return {1, redis.call('HGET', KEYS[6], id)}
end
local room = redis.call('HGET', KEYS[9], id)
if room and not deadline then
  return {2, room}
end
return {0, ''}
"#
);

/// Relays a WebRTC signal to every node, if its target is online in the
/// room. Arguments after the prelude's: 4 the target's lower-cased name, 5
/// the channel, 6 the message. Returns how many nodes took it, or -1 if the
/// target is not online.
pub const SIGNAL: &str = concat!(
    prelude!(),
    r#"
if redis.call('HEXISTS', KEYS[5], ARGV[4]) == 0 then
  return -1
end
return redis.call('PUBLISH', ARGV[5], ARGV[6])
"#
);

/// Reads a room's log as it stands, making its epoch if it has none. Keys:
/// epoch, seq, stream, messages. Arguments: a new epoch, the epoch and head
/// the node last saw, how many events to return. If the seq has gone back
/// below the node's head under the same epoch, Redis lost data: the new
/// epoch replaces it. Returns `{epoch, seq, events newest first, messages
/// newest first}`.
pub const SNAPSHOT: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
if (not epoch) or (epoch == ARGV[2] and seq < tonumber(ARGV[3])) then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
local entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', ARGV[4])
local events = {}
for i, entry in ipairs(entries) do
  events[i] = entry[2][2]
end
return {epoch, seq, events, redis.call('LRANGE', KEYS[4], 0, -1)}
"#;

/// Every script, loaded once; each runs by its SHA.
pub(super) struct Scripts {
    pub(super) append: Script,
    pub(super) join: Script,
    pub(super) leave: Script,
    pub(super) reap: Script,
    pub(super) renew: Script,
    pub(super) lookup: Script,
    pub(super) signal: Script,
    pub(super) snapshot: Script,
}

impl Scripts {
    pub(super) fn load() -> Scripts {
        Scripts {
            append: Script::new(APPEND),
            join: Script::new(JOIN),
            leave: Script::new(LEAVE),
            reap: Script::new(REAP),
            renew: Script::new(RENEW),
            lookup: Script::new(LOOKUP),
            signal: Script::new(SIGNAL),
            snapshot: Script::new(SNAPSHOT),
        }
    }
}

/// The names of one room's keys, in the order the scripts' prelude takes
/// them.
pub(super) struct Keys {
    pub(super) room: RoomName,
    pub(super) epoch: String,
    pub(super) seq: String,
    pub(super) stream: String,
    pub(super) messages: String,
    /// Lower-cased name → session.
    pub(super) names: String,
    /// Session → name.
    pub(super) sessions: String,
    /// Session → the end of its lease, in ms of Redis's clock.
    pub(super) leases: String,
    /// Session → its rate limit's `tokens since`.
    pub(super) buckets: String,
    /// The JSON bytes the stream holds.
    pub(super) bytes: String,
    /// Session → the idempotency keys of its last chat messages, with
    /// their seqs.
    pub(super) sent: String,
}

/// Session → the room it is in, for every room: how a node tells a session
/// of another room from an unknown one.
const SESSION_ROOMS: &str = "pushlab:session-rooms";

impl Keys {
    pub(super) fn of(room: &RoomName) -> Keys {
        let key = |what: &str| format!("pushlab:room:{{{room}}}:{what}");
        Keys {
            room: room.clone(),
            epoch: key("epoch"),
            seq: key("seq"),
            stream: key("stream"),
            messages: key("messages"),
            names: key("names"),
            sessions: key("sessions"),
            leases: key("leases"),
            buckets: key("buckets"),
            bytes: key("bytes"),
            sent: key("sent"),
        }
    }

    /// `script` with every key of the prelude.
    pub(super) fn invoke<'a>(&self, script: &'a Script) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        for key in [
            &self.epoch,
            &self.seq,
            &self.stream,
            &self.messages,
            &self.names,
            &self.sessions,
            &self.leases,
            &self.buckets,
        ] {
            invocation.key(key);
        }
        invocation.key(SESSION_ROOMS);
        invocation.key(&self.bytes);
        invocation.key(&self.sent);
        invocation
    }
}

#[cfg(test)]
mod tests {
    use pushlab_testkit::RedisServer;
    use redis::streams::StreamRangeReply;

    use super::Keys;
    use crate::core::log::{Cursor, LogBudget, Reader};
    use crate::core::names::RoomName;
    use crate::store::redis::testing::{lobby, name, say};
    use crate::store::redis::RedisStore;

    #[tokio::test]
    async fn a_room_s_stream_in_redis_and_its_window_keep_at_most_the_room_s_byte_budget() {
        // Arrange: a 256 KiB budget against 200 messages of 2000 emoji
        // (about 1.6 MB of JSON), well within --history.
        let redis = RedisServer::start();
        let room_bytes = 256 * 1024;
        let budget = LogBudget::new(room_bytes, usize::MAX);
        let store = RedisStore::connect_bounded(
            &redis.url(),
            10_000,
            budget,
            super::super::QueueLimits::default(),
        )
        .unwrap();
        let log = lobby(&store);
        let mut reader = Reader::new(log.clone(), Cursor::default());
        let emoji = say(&"\u{1F600}".repeat(2000));

        // Act
        for _ in 0..200 {
            log.append(name("ann"), emoji.clone()).await.unwrap();
        }

        // Assert: the stream holds the newest events, within the budget,
        // and counts what it holds.
        let keys = Keys::of(&RoomName::lobby());
        let mut conn = store.shared.manager.clone();
        let stream: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&keys.stream)
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        let kept: Vec<String> = stream
            .ids
            .iter()
            .map(|entry| entry.get::<String>("e").unwrap())
            .collect();
        let bytes: usize = kept.iter().map(String::len).sum();
        assert!(bytes <= room_bytes, "{bytes} bytes in the stream");
        assert!(bytes > room_bytes - kept[0].len(), "and the budget is used");
        assert_eq!(stream.ids.last().map(|e| e.id.as_str()), Some("200-0"));
        let counted: usize = redis::cmd("GET")
            .arg(&keys.bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(counted, bytes, "the script counts what the stream holds");
        let window = store.shared.budget.node.used();
        assert!(window <= room_bytes, "{window} bytes in the node's window");
        let read = reader.next(usize::MAX);
        assert!(read.gap.is_some(), "a reader from the start is told");
        assert_eq!(read.events.last().map(|e| e.seq), Some(200));
    }
}
