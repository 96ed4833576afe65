-- Shared prelude, prepended to every mutation script (see scripts.py).
--
-- KEYS: 1 balance, 2 ledger stream, 3 account meta hash, 4 idempotency hash (current),
--       5 idempotency hash (previous generation), 6 holds hash, 7 hold expiry zset,
--       8 lots hash, 9 lot order zset, 10 lot expiry zset (lots.lua);
--       scripts may add their own after these.
-- ARGV: 1 idempotency key, 2 fingerprint (what the operation is: never the app),
--       3 idempotency retention (ms), 4 auto-initialize ('1'/'0'), 5 default credits, 6 app,
--       7 call nonce ('' for maintenance; '*' when the key was made for this one call),
--       8 legacy fingerprint (the earlier versions' one, which included the calling app; '' for none);
--       scripts add their own from ARGV[9] on.
--
-- THE LEDGER IS THE COMMIT RECORD. Balance, idempotency records, hold records, the refunds
-- hash and the meta marks are derived state, rebuilt from the entries by a full repair
-- (reconcile.lua, mode 'full'). Redis 6.2/7.0 can replay a *prefix* of one script's writes
-- after a power loss (a torn MULTI in the append-only file), so every script writes in
-- units, each unit in this order:
--   1. XADD the entry (it carries everything its effect needs: idempotency key in `idem`,
--      hold/entry id in `ref`, fingerprint, call nonce and hold expiry in meta._sc);
--   2. the idempotency record (so a retry after this point replays, never re-applies);
--   3. the unit's other derived state (hold record and expiry, refunds hash, meta marks;
--      the entry's block sums, which append() writes right after the XADD, one HSET);
--   4. SET the balance, LAST.
-- A unit is: an expired hold's return (expire_hold), an initialization (do_init), the
-- script's own effect (commit). Any prefix of a script therefore ends either between
-- units (harmless: complete units only) or inside one unit after its XADD and before its
-- SET: the balance then lags the ledger by that entry's delta, which the cheap
-- checkpointed reconcile sees (balance ~= checkpoint sum + later deltas), and when the
-- prefix surfaces below a checkpoint (Redis replays a torn MULTI merged into the next one
-- after a second restart) the checkpoint's entry count no longer matches XLEN, which the
-- cheap check also sees. Entries with delta 0 (close) whose mark is lost are harmless
-- until the full repair restores the mark. A prefix that stops before a unit's XADD wrote
-- nothing of that unit. The only writes before a unit's XADD are 'opened' (harmless).
-- What no order can prevent: a retry that runs after a prefix "XADD only" and before the
-- full repair applies the key again; the full repair finds the two entries with one key
-- and compensates the one the record does not point at. Run the repair before traffic.
--
-- Only locals (a global poisons fakeredis for every later script), keys only via KEYS[],
-- numbers leave the script as strings formatted with %d (tostring(1e15) gives '1e+15').
if redis.replicate_commands then redis.replicate_commands() end

local K_BAL, K_TXS, K_META, K_IDEM, K_IDEM_PREV = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local K_HOLDS, K_HOLD_EXP = KEYS[6], KEYS[7]
local IDEM_KEY, FINGERPRINT, IDEM_TTL = ARGV[1], ARGV[2], tonumber(ARGV[3])
local AUTO_INIT, DEFAULT_CREDITS, APP = ARGV[4] == '1', tonumber(ARGV[5]), ARGV[6]
local NONCE, LEGACY_FP = ARGV[7] or '', ARGV[8] or ''
-- MAX_CREDITS, BLOCK, LOT_SPAN and DEFAULT_PRIORITY are set by the first line of every
-- script, which scripts.py writes from the Python declarations (_core/ledger_format.py).
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

-- The 13th element is the entry's lots record (lots.lua), '' for none: the caller's meta
-- in values[9] never carries it, a stored meta carries it in '_sc.l'.
local function reply_entry(id, values, replayed, lots)
  if lots == nil then
    lots = string.match(values[9], '^{"_sc":{[^}]*"l":"([^"]*)"') or ''
  end
  return {'ok', replayed, id, values[1], values[2], values[3], values[4], values[5],
          values[6], values[7], values[8], values[9], lots}
end

-- The entry's own record, first member of its meta JSON (so readers find it by a cheap
-- anchored match, and the caller's metadata keeps its text after it):
--   "_sc":{"f":"<fingerprint>"[,"n":"<call nonce>"][,"x":<hold expiry ms>][,"l":"<lots>"]}
-- f: what the operation was (idempotency conflicts, and rebuilding the record);
-- n: the nonce of the call that applied it (a re-send of that call is not a replay);
-- x: a reserve's expiry (rebuilding an open hold); l: the credit lots the entry opened,
-- drew from or gave back to (lots.lua). Readers drop '_sc' from metadata.
-- An entry whose key the SDK made for the call (nonce '*') has no 'f' and no 'n' (and no
-- '_sc' at all when it needs no extra member): nobody else can hold its key, so there is
-- no conflict to detect and no caller to tell a re-send from a replay (its record says
-- '*': a retry with that key replays whatever it carries), and the hot path keeps ~30
-- bytes per entry.
local function sc_meta(meta, extra)
  local sc
  if NONCE == '*' then
    if not extra then return meta end
    sc = '"_sc":{' .. string.sub(extra, 2)
  else
    sc = '"_sc":{"f":"' .. FINGERPRINT .. '"'
    if NONCE ~= '' then sc = sc .. ',"n":"' .. NONCE .. '"' end
    if extra then sc = sc .. extra end
  end
  sc = sc .. '}'
  if meta == '' or meta == '{}' then return '{' .. sc .. '}' end
  return '{' .. sc .. ',' .. string.sub(meta, 2)
end

-- Block sums, derived state in the meta hash that lets a reconcile add ~1 number per 1024
-- entries instead of reading them (reconcile.lua, 'Block sums'):
--   n      how many entries the account's ledger has had (trimmed ones included): the
--          entry just appended is the n-th (its ordinal);
--   bo     the sum of the deltas of the open block: the ordinals above bfn up to n;
--   bf/bfn the folded base: the sum and the count of the first bfn ordinals. A block
--          closes every 1024 entries: its sum folds into bf at once (bfn = n), in the
--          same HSET; a pass of reconcile.lua that disagreed, or a repair, seeds it.
-- So the meta hash, which every script reads, keeps four block fields however long the
-- ledger grows (a listpack is scanned for each field asked: a field per closed block,
-- kept until a reconcile folded it, measured 4 µs per read at 124 fields).
-- One read and ONE write: n and the sums change in the same HSET, so no prefix of a torn
-- script can count an entry without its delta (or the reverse). Entries appended without
-- this update (the TypeScript SDK, an earlier version, a prefix that kept only the XADD)
-- leave n short of base_count + XLEN, which sends the reconcile back to reading entries.
-- lua/debit.lua's fast block writes the same fields the same way.
-- ledger_block_put writes them from 'n' and 'bo' as read (false when absent);
-- lua/debit.lua's fast block reads them with its other marks and calls it too.
-- LEDGER_N is the 'n' this script wrote last (the fast view's stamp, below); FV_HX and
-- FV_SUM, when the debit's fast block sets them, are the fast view to write with it.
local LEDGER_N, FV_HX, FV_SUM = nil, nil, nil

-- The debit fast block's view (see "The debit fast block's view" below):
-- '<n>|<soonest open hold expiry, '' for none>|<lots summary>'.
local function fast_view_text(n, hx, summary)
  return fmt(n) .. '|' .. hx .. '|' .. summary
end

local function ledger_block_put(n_read, bo_read, delta)
  local n = tonumber(n_read or '0') + 1
  local o = tonumber(bo_read or '0') + delta
  local args = {'HSET', K_META, 'n', fmt(n), 'bo', fmt(o)}
  if n % BLOCK == 0 then
    local bf = tonumber(redis.call('HGET', K_META, 'bf') or '0')
    args = {'HSET', K_META, 'n', fmt(n), 'bo', '0', 'bf', fmt(bf + o), 'bfn', fmt(n)}
  end
  if FV_SUM then
    args[#args + 1] = 'fv'
    args[#args + 1] = fast_view_text(n, FV_HX, FV_SUM)
    FV_SUM = nil
  end
  redis.call(unpack(args))
  LEDGER_N = n
end

-- Append one entry. The reply carries the caller's metadata; the stored meta adds '_sc'.
-- Its block sums are written right after it (derived state: before the unit's balance);
-- append_counted takes the block fields 'n' and 'bo' as already read.
local function append_counted(n_read, bo_read, typ, delta, after, action, app, reason, ref,
                              idem, meta, stored_meta)
  local values = {typ, fmt(delta), fmt(after), action, app, reason, ref, idem, meta}
  local id = redis.call('XADD', K_TXS, '*', 'type', values[1], 'delta', values[2],
                        'balance', values[3], 'action', action, 'app', app, 'reason', reason,
                        'ref', ref, 'idem', idem, 'meta', stored_meta or meta)
  ledger_block_put(n_read, bo_read, delta)
  return id, values
end

-- An idempotency record: 'legacy fingerprint|entry id' (see idem_lookup below).
local function idem_put(key, fp, id)
  redis.call('HSET', K_IDEM, key, fp .. '|' .. id)
end

-- The lots summary (lots.lua): 'tracked|soonest expiry|head id|head record', soonest as
-- text ('' = none), head nil for none.
local function lots_summary_text(tracked, soonest, head, rec)
  return fmt(tracked) .. '|' .. soonest .. '|' .. (head and (head .. '|' .. rec) or '')
end

-- The account meta hash's 'noctl' mark ("no controls seen"), as a debit's fast block read
-- it: true, false (read, absent) or nil (not read). Put by a general-path debit whose
-- controls() found none, taken away by set_tier.lua with every change of the controls; the
-- fast block runs only where it is present, so a lost mark costs one general-path debit.
local NOCTL_SEEN = nil

-- @fast: scripts.py puts a script's '-- @fast' block here. Only what is above this line
-- is made before it, so it pays for few closures; what it writes, it writes through the
-- helpers above, as the general path does.

-- Entry field names, in the order every entry is written (listpacks then store the names
-- once per node). Replies carry the values only, in this order: {'ok', replayed, id, ...}.
-- append_counted writes them in this order. The set is the TypeScript SDK's; what only
-- this SDK needs rides in meta under '_sc'.
local FIELDS = {'type', 'delta', 'balance', 'action', 'app', 'reason', 'ref', 'idem', 'meta'}

-- Values of a stored entry in FIELDS order, whatever order it was written in.
local function entry_values(flat)
  local by_name = {}
  for i = 1, #flat, 2 do by_name[flat[i]] = flat[i + 1] end
  local values = {}
  for i = 1, #FIELDS do values[i] = by_name[FIELDS[i]] or '' end
  return values
end

-- (fingerprint, nonce, expiry) from a stored meta; nil fingerprint for an entry without
-- '_sc' (written by an earlier version, or by the TypeScript SDK).
local function sc_fields(meta)
  local body = string.match(meta, '^{"_sc":{([^}]*)}')
  if not body then return nil, nil, nil end
  return string.match(body, '"f":"([^"]*)"'), string.match(body, '"n":"([^"]*)"'),
         tonumber(string.match(body, '"x":(%d+)'))
end

local function ledger_block_add(delta)
  local m = redis.call('HMGET', K_META, 'n', 'bo')
  ledger_block_put(m[1], m[2], delta)
end

local function append(typ, delta, after, action, app, reason, ref, idem, meta, stored_meta)
  local m = redis.call('HMGET', K_META, 'n', 'bo')
  return append_counted(m[1], m[2], typ, delta, after, action, app, reason, ref, idem, meta,
                        stored_meta)
end

-- 'replayed' for a found entry: '0' when it was applied by this very call (the SDK's own
-- re-send after a lost reply: redis-py's or the backend's retry), '1' otherwise.
local function replayed_flag(nonce)
  if NONCE == '*' or (NONCE ~= '' and nonce == NONCE) then return '0' end
  return '1'
end

-- A replay returns the first call's entry; the same key with other parameters is a
-- conflict. The record is 'legacy fingerprint|entry id' (the format earlier readers parse,
-- so a rolling upgrade replays both ways); the entry's own '_sc.f' is what is compared,
-- and the record's fingerprint only for an entry without '_sc' (an SDK-made key, or an
-- entry of an earlier version). A record the full repair rebuilt for an entry without
-- '_sc' says '*', as does the record of a key the SDK made for its call (the client sends
-- '*' as the legacy fingerprint then): any parameters replay (never applied twice).
-- The current generation's birth time is read with the key (one HMGET, not two reads) and
-- kept for idem_record_as: a string, false (none), nil (not read yet).
local idem_born = nil

local function idem_lookup()
  local got = redis.call('HMGET', K_IDEM, IDEM_KEY, BORN)
  local rec = got[1]
  idem_born = got[2]
  if not rec then rec = redis.call('HGET', K_IDEM_PREV, IDEM_KEY) end
  if not rec then return nil end
  local sep = string.find(rec, '|', 1, true)
  local rec_fp = string.sub(rec, 1, sep - 1)
  local id = string.sub(rec, sep + 1)
  local found = redis.call('XRANGE', K_TXS, id, id)
  if #found == 0 then
    if rec_fp ~= LEGACY_FP and rec_fp ~= FINGERPRINT and rec_fp ~= '*' then
      return {'conflict'}
    end
    return {'replay_gone', id}
  end
  local values = entry_values(found[1][2])
  local fp, nonce = sc_fields(values[9])
  if fp then
    if fp ~= FINGERPRINT then return {'conflict'} end
  elseif rec_fp ~= '*' and (rec_fp ~= LEGACY_FP or LEGACY_FP == '') then
    return {'conflict'}
  end
  return reply_entry(found[1][1], values, replayed_flag(nonce))
end

-- Record the key with its outcome. Two generations of one hash per account: the current
-- one is renamed to previous once it is IDEM_TTL old, and lookups read both, so a key lives
-- at least IDEM_TTL and at most twice that, without one Redis key (and expiry) per call.
-- A torn rotation loses at most records the full repair rebuilds from the ledger.
local function idem_record_as(key, fp, id)
  local now = NOW
  local born = idem_born
  if born == nil then born = redis.call('HGET', K_IDEM, BORN) end
  if born and now - tonumber(born) >= IDEM_TTL then
    redis.call('UNLINK', K_IDEM_PREV)
    redis.call('RENAME', K_IDEM, K_IDEM_PREV)
    redis.call('PEXPIRE', K_IDEM_PREV, IDEM_TTL)
    born = nil
  end
  if not born then
    redis.call('HSET', K_IDEM, BORN, fmt(now))
    redis.call('PEXPIRE', K_IDEM, 2 * IDEM_TTL)
    born = fmt(now)
  end
  idem_born = born
  idem_put(key, fp, id)
end

local function idem_record(id)
  idem_record_as(IDEM_KEY, LEGACY_FP, id)
end

-- An account is initialized when its meta hash says so, or when it has a balance written
-- by the TypeScript SDK (a balance key and no 'opened' mark: the meta hash alone says
-- nothing, since block sums and checkpoints live in it too). A credit that reaches an
-- account before its init marks it 'opened', so the later init still grants the starting
-- credits.
-- A closed account counts as initialized: it never gets starting credits again (not from a
-- user.created that Svix delivers after user.deleted, not from auto-initialize).
-- The 'init', 'closed' and 'opened' marks are read once per script (is_closed, then
-- is_initialized, in one HMGET) and kept up to date by do_init, the only prelude code that
-- writes 'init' and 'closed'.
local meta_marks = nil

local function read_marks()
  if not meta_marks then
    meta_marks = redis.call('HMGET', K_META, 'init', 'closed', 'opened')
  end
  return meta_marks
end

local function is_initialized(raw_balance)
  local marks = read_marks()
  if marks[1] or marks[2] then return true end
  return raw_balance ~= false and not marks[3]
end

-- A closed account (close.lua) takes no new debits or reservations; 'closed' holds the id
-- of its close entry.
local function is_closed()
  return read_marks()[2] ~= false
end

-- 'lots_all': the account had no credits before lots (no balance key when this version
-- first wrote to it), so credits no lot tracks appearing later are a finding (reconcile.lua,
-- 'untracked'), unless a writer without lots appended since (the block sums see it).
local function mark_opened(raw_balance)
  if raw_balance == false then redis.call('HSET', K_META, 'opened', '1', 'lots_all', '1') end
end

-- @lots: scripts.py puts lua/lots.lua here.

-- The debit fast block's view (lua/debit.lua): the meta hash's 'fv' field,
-- '<n>|<soonest open hold expiry, '' for none>|<lots summary>', so the fast block reads
-- what decides its case in the HMGET it makes anyway instead of the lots hash's summary
-- and the hold expiry index (two in-script commands fewer per debit). It is a cache, valid
-- only while its stamp equals the block sums' 'n': every entry any writer of this version
-- or an earlier one with block sums appends moves 'n', so a change of lots or holds made
-- with an entry makes it stale by itself, and the fast block then leaves for the general
-- path, which writes it again. Writers of lots or holds without an entry drop it
-- (grants.lua, sweep.lua, the repair, lots_restore.lua). A general-path debit writes it
-- after its balance (a prefix that stops before it leaves it stale, never wrong); the
-- fast block writes it with the block sums.
local function fast_view_put()
  if not (lot_summary_written and LEDGER_N) then return end
  local first = redis.call('ZRANGE', K_HOLD_EXP, 0, 0, 'WITHSCORES')
  local hx = first[2] and fmt(tonumber(first[2])) or ''
  redis.call('HSET', K_META, 'fv', fast_view_text(LEDGER_N, hx, lot_summary_written))
end

-- Initialize inside the calling script: the starting credits, their entry and their lot
-- (never expiring, the default priority).
-- Unit order: XADD, meta mark, balance last.
local function do_init(credits, base, reason)
  lots_catch_up(base)
  local after = base + credits
  local opening = lots_opening(DEFAULT_PRIORITY, nil)
  local fresh = redis.call('EXISTS', K_BAL) == 0  -- no credits before lots ('lots_all')
  local id, values = append('init', credits, after, 'initialize', APP, reason, '', '', '',
                            lots_meta(opening))
  if fresh then
    redis.call('HSET', K_META, 'init', id, 'lots_all', '1')
  else
    redis.call('HSET', K_META, 'init', id)
  end
  if meta_marks then meta_marks[1] = id end
  lots_open(id, credits, DEFAULT_PRIORITY, nil, 'init', base)
  lots_apply()
  redis.call('SET', K_BAL, fmt(after))
  return id, values, after, opening
end

-- Holds: K_HOLDS maps hold id (its reserve entry's id) to 'state|amount|expires|action|app'
-- for an open hold (state 'O'); a closed one keeps 'S|amount|captured' (settled),
-- 'R|amount' (released) or 'E|amount' (expired), so a late settle can say what happened.
-- K_HOLD_EXP scores open holds by expiry time.
local function parse_hold(rec)
  return string.match(rec, '^(%a)|(%d+)|?(%d*)|?([^|]*)|?(.*)$')
end

-- The UTC calendar month of a server time in ms (days to civil date, H. Hinnant's).
local function utc_month(ms)
  local z = math.floor(ms / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
                          - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 12 + m - 1
end

-- Per-member spend limits inside an organization's account (member_limit.lua): the member
-- is the top-level "member" of an entry's metadata (for a give-back, of the entry whose
-- window it returns to). In the controls hash: 'mlim' (some member limit is set),
-- 'mdaily'/'mmonthly' (every member's limits), 'ml:<member>' ('<daily>|<monthly>': one
-- member's own, '' parts for none) and 'mw:<member>' ('<day>|<spent>|<month>|<spent>').
--
-- The member window's refusal ({'spend_limit', 'member_daily' | 'member_monthly', limit,
-- spent, window number, amount, member}), or nil and its writer (nil: nothing to write).
-- spent > 0 counts (the member of `meta`, else of entry `ref`); spent < 0 gives back to
-- entry `ref`'s window, if it is still the current one.
local function member_window(k_ctl, spent, ref, meta)
  -- Nested, so a script pays for this closure only when a member limit is set.
  local function member_of(text)
    if not text or text == '' then return nil end
    if not cjson then  -- a Lua without cjson (some fakeredis builds): the SDK's own JSON
      return string.match(text, '[{,]"member":"([^"\\]+)"')
    end
    local ok, t = pcall(cjson.decode, text)
    if ok and type(t) == 'table' and type(t.member) == 'string' and t.member ~= '' then
      return t.member
    end
    return nil
  end
  local member = nil
  if spent > 0 then member = member_of(meta) end
  if not member and ref ~= '' then
    local found = redis.call('XRANGE', K_TXS, ref, ref)
    if #found > 0 then member = member_of(entry_values(found[1][2])[9]) end
  end
  if not member then return nil, nil end
  local got = redis.call('HMGET', k_ctl, 'mdaily', 'mmonthly', 'ml:' .. member, 'mw:' .. member)
  local daily, monthly = tonumber(got[1] or ''), tonumber(got[2] or '')
  if got[3] then
    local d, m = string.match(got[3], '^(%d*)|(%d*)$')
    daily, monthly = tonumber(d or ''), tonumber(m or '')
  end
  local day, month = math.floor(NOW / 86400000), utc_month(NOW)
  local wd, wds, wm, wms = string.match(got[4] or '', '^(%d+)|(%d+)|(%d+)|(%d+)$')
  local ds = (tonumber(wd or '') == day) and tonumber(wds) or 0
  local ms = (tonumber(wm or '') == month) and tonumber(wms) or 0
  if spent > 0 then
    if not (daily or monthly) then return nil, nil end
    if daily and ds + spent > daily then
      return {'spend_limit', 'member_daily', fmt(daily), fmt(ds), fmt(day), fmt(spent), member}
    end
    if monthly and ms + spent > monthly then
      return {'spend_limit', 'member_monthly', fmt(monthly), fmt(ms), fmt(month), fmt(spent),
              member}
    end
    ds, ms = ds + spent, ms + spent
  else
    local t = tonumber(string.match(ref, '^(%d+)%-') or '')
    local ds0, ms0 = ds, ms
    if t and math.floor(t / 86400000) == day then ds = math.max(0, ds + spent) end
    if t and utc_month(t) == month then ms = math.max(0, ms + spent) end
    if ds == ds0 and ms == ms0 then return nil, nil end
  end
  return nil, function()
    redis.call('HSET', k_ctl, 'mw:' .. member,
               fmt(day) .. '|' .. fmt(ds) .. '|' .. fmt(month) .. '|' .. fmt(ms))
  end
end

-- The account's controls hash, when the script has it (its body sets this first, from its
-- KEYS): an expired hold then gives its reservation's spend window back, like a release.
local K_CTL_EXPIRY = nil

-- Return an open hold's credits with an 'expire' entry and close it.
-- Unit order: XADD, hold record, expiry zset, spend windows, balance last.
local function expire_hold(hid, amount, action, app)
  local bal = tonumber(redis.call('GET', K_BAL) or '0')
  local back, lapsed = lots_give_back(lots_of_entry(hid), amount, 0, lots_owed(bal))
  local after = bal + amount
  local l = lots_encode(back)
  append('expire', amount, after, action, app, 'hold expired', hid, '', '', lots_meta(l))
  lots_apply()
  redis.call('HSET', K_HOLDS, hid, 'E|' .. fmt(amount))
  redis.call('ZREM', K_HOLD_EXP, hid)
  if K_CTL_EXPIRY then
    -- The reservation's spend windows (its id is its time), where still the current ones
    -- (the hash's 'd'/'m'), never below 0; and its member's (member_window).
    local c = redis.call('HMGET', K_CTL_EXPIRY, 'd', 'ds', 'm', 'ms', 'mlim')
    if c[5] then
      local _, write = member_window(K_CTL_EXPIRY, -amount, hid, nil)
      if write then write() end
    end
    local t = tonumber(string.match(hid, '^(%d+)%-') or '')
    if t and (c[1] or c[3]) then
      local day, month = math.floor(NOW / 86400000), utc_month(NOW)
      local ds, ms = tonumber(c[2] or '0'), tonumber(c[4] or '0')
      local moved = false
      if tonumber(c[1] or '') == day and math.floor(t / 86400000) == day and ds > 0 then
        ds, moved = math.max(0, ds - amount), true
      end
      if tonumber(c[3] or '') == month and utc_month(t) == month and ms > 0 then
        ms, moved = math.max(0, ms - amount), true
      end
      if moved then redis.call('HSET', K_CTL_EXPIRY, 'ds', fmt(ds), 'ms', fmt(ms)) end
    end
  end
  redis.call('SET', K_BAL, fmt(after))
  lots_lapse_all(lapsed, after)
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
-- Expired holds go back first, so a balance is never read with stale holds in it; lots
-- first catch up with credits taken without them, and lots past their expiry lapse.
local function current_balance()
  local raw = redis.call('GET', K_BAL)
  lots_catch_up(tonumber(raw or '0'))
  if expire_due(EXPIRE_BATCH) + lots_expire_due(LOT_EXPIRE_BATCH) > 0 then
    raw = redis.call('GET', K_BAL)
  end
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

-- Take `amount` for the script's own entry: the draws, as the entry's '_sc' member.
local function draw_for_entry(amount)
  local l = lots_encode(lots_draw(amount))
  return ',"l":"' .. l .. '"', l
end

-- An open hold by id, after returning any that expired; or the refusal to reply with.
local function open_hold(hid)
  lots_catch_up(tonumber(redis.call('GET', K_BAL) or '0'))
  expire_due(EXPIRE_BATCH)
  lots_expire_due(LOT_EXPIRE_BATCH)
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

-- The script's own unit: append the entry, record the idempotency key, let `derived(id)`
-- write the unit's other state, and set the balance last (see the write order above).
-- `sc_extra` adds members to the entry's '_sc' (a reserve's expiry); `lots`, when given,
-- is the lots record it holds (draw_for_entry's second value), else it is read back.
local function commit(typ, delta, after, action, app, reason, ref, meta, derived, sc_extra,
                      lots)
  local stored = sc_meta(meta, sc_extra)
  local id, values = append(typ, delta, after, action, app, reason, ref, IDEM_KEY, meta, stored)
  idem_record(id)
  if derived then derived(id) end
  lots_apply()
  redis.call('SET', K_BAL, fmt(after))
  local reply = reply_entry(id, values, '0',
                            lots or string.match(stored, '^{"_sc":{[^}]*"l":"([^"]*)"') or '')
  -- Credits lapsed before the entry (lots past expiry): 14 the balance after, 15 the credits.
  if lot_lapsed > 0 then reply[14], reply[15] = fmt(after), fmt(lot_lapsed) end
  return reply
end

-- Keys that hold forever (purchase, allocate, revoke; lua/purchase.lua and the others):
-- K_ONCE, a hash beside the account's other keys, maps '<kind>:<key>' to the id of the
-- entry that applied it, so a payment or a period is applied once ever, not only within
-- the idempotency records' retention. Derived state like those: a full repair rebuilds it
-- from the entries' `idem` fields (lot_reconciliation.py). A field read here that points
-- at an entry replays it (or is a conflict when the entry's fingerprint differs).
local function once_lookup(k_once, field)
  local id = redis.call('HGET', k_once, field)
  if not id then return nil end
  if string.sub(id, 1, 1) == '-' then return {'none', id} end
  local found = redis.call('XRANGE', K_TXS, id, id)
  if #found == 0 then return {'replay_gone', id} end
  local values = entry_values(found[1][2])
  local fp, nonce = sc_fields(values[9])
  if fp and fp ~= FINGERPRINT then return {'conflict'} end
  return reply_entry(found[1][1], values, replayed_flag(nonce))
end

-- Account controls (spend windows per tier, low-balance alerts): one call per script,
-- `local refusal, write = controls(KEYS[i], KEYS[i + 1], spent, ref, before, after, meta)`,
-- before its commit; `write(id)` goes in commit's derived slot (derived state, written
-- after the entry and before the balance, like the rest of the unit).
-- K_CTL (hash): 'daily', 'monthly', 'low' (limits and threshold; '' or absent: none),
-- 'd'/'ds' (UTC day number and credits spent in it), 'm'/'ms' (UTC month number
-- year * 12 + month - 1 and credits spent in it), 'fired' (an alert was recorded for the
-- current crossing). K_ALERTS (stream): one entry per crossing, fields balance, threshold,
-- entry (the ledger entry that crossed).

-- spent > 0: credits this entry spends (refused past a limit: {'spend_limit', window,
-- limit, spent in window, window number, amount}); spent < 0: credits given back to the
-- window of entry `ref` (its id is its time), if that window is still the current one.
-- A low-balance alert is due when the balance goes from `before` to `after` below the
-- threshold while armed (no alert yet for this crossing, or `before` at or above it).
-- An account without the hash costs one HMGET and returns (nil, nil).
local function controls(k_ctl, k_alerts, spent, ref, before, after, meta)
  local c = redis.call('HMGET', k_ctl, 'daily', 'monthly', 'low', 'd', 'ds', 'm', 'ms', 'fired',
                       'mlim')
  local daily, monthly, low = tonumber(c[1] or ''), tonumber(c[2] or ''), tonumber(c[3] or '')
  if not (daily or monthly or low or c[4] or c[6] or c[8] or c[9]) then return nil, nil end
  local day, month = math.floor(NOW / 86400000), utc_month(NOW)
  local ds = (tonumber(c[4] or '') == day) and tonumber(c[5] or '0') or 0
  local ms = (tonumber(c[6] or '') == month) and tonumber(c[7] or '0') or 0
  local ds0, ms0 = ds, ms
  if spent > 0 then
    if daily and ds + spent > daily then
      return {'spend_limit', 'daily', fmt(daily), fmt(ds), fmt(day), fmt(spent)}, nil
    end
    if monthly and ms + spent > monthly then
      return {'spend_limit', 'monthly', fmt(monthly), fmt(ms), fmt(month), fmt(spent)}, nil
    end
    if daily or monthly then ds, ms = ds + spent, ms + spent end
  elseif spent < 0 then
    local t = tonumber(string.match(ref or '', '^(%d+)%-') or '')
    if t and math.floor(t / 86400000) == day then ds = math.max(0, ds + spent) end
    if t and utc_month(t) == month then ms = math.max(0, ms + spent) end
  end
  -- A member's own window inside an organization's account (member_window, above).
  local member_write = nil
  if c[9] and spent ~= 0 then
    local refusal
    refusal, member_write = member_window(k_ctl, spent, ref or '', meta)
    if refusal then return refusal, nil end
  end
  local fire, rearm = false, false
  if low then
    if (not c[8] or before >= low) and after < low then fire = true
    elseif c[8] and after >= low then rearm = true end
  end
  return nil, function(id)
    if ds ~= ds0 or ms ~= ms0 then
      redis.call('HSET', k_ctl, 'd', fmt(day), 'ds', fmt(ds), 'm', fmt(month), 'ms', fmt(ms))
    end
    if member_write then member_write() end
    if fire then
      redis.call('XADD', k_alerts, 'MAXLEN', '~', '1000', '*', 'balance', fmt(after),
                 'threshold', fmt(low), 'entry', id)
      redis.call('HSET', k_ctl, 'fired', id)
    elseif rearm then
      redis.call('HDEL', k_ctl, 'fired')
    end
  end
end
