-- The debit script of sparked-credits before credit lots, prelude included, kept
-- verbatim to play an older SDK process in a rolling upgrade (tests/test_lots.py).
-- Shared prelude, prepended to every mutation script (see scripts.py).
--
-- KEYS: 1 balance, 2 ledger stream, 3 account meta hash, 4 idempotency hash (current),
--       5 idempotency hash (previous generation), 6 holds hash, 7 hold expiry zset;
--       scripts may add their own after these.
-- ARGV: 1 idempotency key, 2 parameter fingerprint, 3 idempotency retention (ms),
--       4 auto-initialize ('1'/'0'), 5 default credits, 6 app; scripts add their own after.
--
-- Only locals (a global poisons fakeredis for every later script), keys only via KEYS[],
-- numbers leave the script as strings formatted with %d (tostring(1e15) gives '1e+15').
if redis.replicate_commands then redis.replicate_commands() end

local K_BAL, K_TXS, K_META, K_IDEM, K_IDEM_PREV = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_HOLDS, K_HOLD_EXP = KEYS[6], KEYS[7]
local IDEM_KEY, FINGERPRINT, IDEM_TTL = ARGV[1], ARGV[2], tonumber(ARGV[3])
local AUTO_INIT, DEFAULT_CREDITS, APP = ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6]
local MAX_CREDITS = 9007199254740991
local BORN = ''  -- hash field holding a generation's birth time; idempotency keys are never ''
local EXPIRE_BATCH = 16  -- expired holds returned per script call, to bound its work

-- Server time in ms: hold expiry and key retention never trust a client's clock.
local NOW
do
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function fmt(n)
  return string.format('%d', n)
end

-- Entry field names, in the order every entry is written (listpacks then store the names
-- once per node). Replies carry the values only, in this order: {'ok', replayed, id, ...}.
local FIELDS = {'type', 'delta', 'balance', 'action', 'app', 'reason', 'ref', 'idem', 'meta'}

local function reply_entry(id, values, replayed)
  return {'ok', replayed, id, values[1], values[2], values[3], values[4], values[5],
          values[6], values[7], values[8], values[9]}
end

-- Values of a stored entry in FIELDS order, whatever order it was written in.
local function entry_values(flat)
  local by_name = {}
  for i = 1, #flat, 2 do by_name[flat[i]] = flat[i + 1] end
  local values = {}
  for i = 1, #FIELDS do values[i] = by_name[FIELDS[i]] or '' end
  return values
end

-- Append one entry.
local function append(typ, delta, after, action, app, reason, ref, idem, meta)
  local values = {typ, fmt(delta), fmt(after), action, app, reason, ref, idem, meta}
  local id = redis.call('XADD', K_TXS, '*', 'type', values[1], 'delta', values[2],
                        'balance', values[3], 'action', action, 'app', app, 'reason', reason,
                        'ref', ref, 'idem', idem, 'meta', meta)
  return id, values
end

-- A replay returns the first call's entry; the same key with other parameters is a conflict.
local function idem_lookup()
  local rec = redis.call('HGET', K_IDEM, IDEM_KEY)
  if not rec then rec = redis.call('HGET', K_IDEM_PREV, IDEM_KEY) end
  if not rec then return nil end
  local sep = string.find(rec, '|', 1, true)
  if string.sub(rec, 1, sep - 1) ~= FINGERPRINT then return {'conflict'} end
  local id = string.sub(rec, sep + 1)
  local found = redis.call('XRANGE', K_TXS, id, id)
  if #found == 0 then return {'replay_gone', id} end
  return reply_entry(found[1][1], entry_values(found[1][2]), '1')
end

-- Record the key with its outcome. Two generations of one hash per account: the current
-- one is renamed to previous once it is IDEM_TTL old, and lookups read both, so a key lives
-- at least IDEM_TTL and at most twice that, without one Redis key (and expiry) per call.
local function idem_record(id)
  local now = NOW
  local born = redis.call('HGET', K_IDEM, BORN)
  if born and now - tonumber(born) >= IDEM_TTL then
    redis.call('UNLINK', K_IDEM_PREV)
    redis.call('RENAME', K_IDEM, K_IDEM_PREV)
    redis.call('PEXPIRE', K_IDEM_PREV, IDEM_TTL)
    born = nil
  end
  if not born then
    redis.call('HSET', K_IDEM, BORN, fmt(now))
    redis.call('PEXPIRE', K_IDEM, 2 * IDEM_TTL)
  end
  redis.call('HSET', K_IDEM, IDEM_KEY, FINGERPRINT .. '|' .. id)
end

-- An account is initialized when its meta hash says so, or when it has a balance written
-- by the TypeScript SDK (a balance key and no meta hash). A credit that reaches an account
-- before its init marks the meta hash, so the later init still grants the starting credits.
-- A closed account counts as initialized: it never gets starting credits again (not from a
-- user.created that Svix delivers after user.deleted, not from auto-initialize).
local function is_initialized(raw_balance)
  local marks = redis.call('HMGET', K_META, 'init', 'closed')
  if marks[1] or marks[2] then return true end
  return raw_balance ~= false and redis.call('EXISTS', K_META) == 0
end

-- A closed account (close.lua) takes no new debits or reservations; 'closed' holds the id
-- of its close entry.
local function is_closed()
  return redis.call('HEXISTS', K_META, 'closed') == 1
end

local function mark_opened(raw_balance)
  if raw_balance == false then redis.call('HSET', K_META, 'opened', '1') end
end

-- Initialize inside the calling script: the starting credits and their entry.
local function do_init(credits, base, reason)
  local after = base + credits
  redis.call('SET', K_BAL, fmt(after))
  local id, values = append('init', credits, after, 'initialize', APP, reason, '', '', '')
  redis.call('HSET', K_META, 'init', id)
  return id, values, after
end

-- Holds: K_HOLDS maps hold id (its reserve entry's id) to 'state|amount|expires|action|app'
-- for an open hold (state 'O'); a closed one keeps 'S|amount|captured' (settled),
-- 'R|amount' (released) or 'E|amount' (expired), so a late settle can say what happened.
-- K_HOLD_EXP scores open holds by expiry time.
local function parse_hold(rec)
  return string.match(rec, '^(%a)|(%d+)|?(%d*)|?([^|]*)|?(.*)$')
end

-- Return an open hold's credits with an 'expire' entry and close it.
local function expire_hold(hid, amount, action, app)
  local after = tonumber(redis.call('GET', K_BAL) or '0') + amount
  redis.call('SET', K_BAL, fmt(after))
  append('expire', amount, after, action, app, 'hold expired', hid, '', '')
  redis.call('HSET', K_HOLDS, hid, 'E|' .. fmt(amount))
  redis.call('ZREM', K_HOLD_EXP, hid)
end

-- Give back every hold past its ttl (up to `limit`); returns how many were due.
local function expire_due(limit)
  local due = redis.call('ZRANGEBYSCORE', K_HOLD_EXP, '-inf', NOW, 'LIMIT', 0, limit)
  for i = 1, #due do
    local hid = due[i]
    local rec = redis.call('HGET', K_HOLDS, hid)
    local state, amount, _, action, app
    if rec then state, amount, _, action, app = parse_hold(rec) end
    if state == 'O' then
      expire_hold(hid, tonumber(amount), action, app)
    else
      redis.call('ZREM', K_HOLD_EXP, hid)
    end
  end
  return #due
end

-- The balance this script starts from, and whether it must initialize the account first.
-- Expired holds go back first, so a balance is never read with stale holds in it.
local function current_balance()
  expire_due(EXPIRE_BATCH)
  local raw = redis.call('GET', K_BAL)
  return tonumber(raw or '0'), raw
end

local function load_balance()
  local bal, raw = current_balance()
  local needs_init = AUTO_INIT and not is_initialized(raw)
  if needs_init then bal = bal + DEFAULT_CREDITS end
  return bal, needs_init, raw
end

local function apply_init_if_needed(needs_init, raw)
  if needs_init then do_init(DEFAULT_CREDITS, tonumber(raw or '0'), 'auto-initialize') end
end

-- An open hold by id, after returning any that expired; or the refusal to reply with.
local function open_hold(hid)
  expire_due(EXPIRE_BATCH)
  local rec = redis.call('HGET', K_HOLDS, hid)
  if not rec then return nil, {'hold_not_found', hid} end
  local state, amount, expires, action, app = parse_hold(rec)
  if state == 'O' and tonumber(expires) <= NOW then
    -- Due, but beyond this call's expiry batch: expire it now, like the sweep would.
    expire_hold(hid, tonumber(amount), action, app)
    state = 'E'
  end
  if state == 'E' then return nil, {'hold_expired', hid} end
  if state ~= 'O' then return nil, {'hold_closed', hid, state} end
  return {amount = tonumber(amount), action = action, app = app}, nil
end

-- Change the balance by delta and append the entry, recording the idempotency key.
local function commit(typ, delta, after, action, app, reason, ref, meta)
  redis.call('SET', K_BAL, fmt(after))
  local id, values = append(typ, delta, after, action, app, reason, ref, IDEM_KEY, meta)
  idem_record(id)
  return reply_entry(id, values, '0')
end

-- debit: ARGV[7] amount, ARGV[8] action, ARGV[9] reason, ARGV[10] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[7])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
apply_init_if_needed(needs_init, raw)
return commit('debit', -amount, bal - amount, ARGV[8], APP, ARGV[9], '', ARGV[10])
