--: argv start sum count chunk mode scope
--: keys refunds
--: reply reconcile
-- reconcile one chunk of an account's ledger. KEYS[11] is the refunds hash (after the
-- shared ten: lots.lua takes 8 to 10).
-- ARGV[9] start id (exclusive; '' = from the checkpoint, or for a full pass from the trim
-- base / the start), ARGV[10] running sum, ARGV[11] running count, ARGV[12] chunk size,
-- ARGV[13] 'check' or 'repair', ARGV[14] 'ckpt' (cheap: after the checkpoint) or 'full'.
--
-- Meta fields: ckpt_id/ckpt_sum/ckpt_count: the checkpoint, the sum and the number of
-- entries up to and including ckpt_id; base_id/base_sum/base_count: the same for the
-- entries trimmed away (trim.lua), which a full pass starts from.
--
-- Cheap pass: sum the entries after the checkpoint; the last chunk compares, in the same
-- script, the balance with the sum AND the count with base_count + XLEN: an entry that
-- appeared at or below the checkpoint (a torn MULTI replayed after a second restart)
-- changes the count and replies 'stale' (the caller then runs a full pass). The cheap pass
-- never repairs: a mismatch is repaired by a full pass.
-- Full pass: from the trim base over every entry. With 'repair' it also rebuilds the
-- derived state from the entries (see prelude.lua: the ledger is the commit record):
-- missing idempotency records, hold records and expiries, closed holds' states, init and
-- close marks, the refunds hash; a second application of one idempotency key (or a second
-- init) is compensated by a new entry; the last chunk sets the balance to the ledger sum
-- with an 'adjust' entry of delta 0 that records what was found (never a silent overwrite).
-- Entries of types this version does not know are counted by their delta, nothing else.
-- Replies: {'more', last_id, sum, count, read, rebuilt, duplicates} or
-- {status, checkpoint_id, sum, count, read, rebuilt, duplicates, balance, lots} with status
-- 'ok', 'mismatch', 'stale' or 'repaired' (about the balance), and lots '' when the credit
-- lots pass the check below, else what is wrong with them (see lots_problem).
local K_REFUNDS = KEYS[11]
local start, sum, count = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local chunk, mode, full = tonumber(ARGV[12]), ARGV[13], ARGV[14] == 'full'
local rebuild = full and mode == 'repair'
local rebuilt, dups = 0, 0
-- A repair writes lots and holds without entries: drop the debit's fast view (prelude.lua).
if rebuild then redis.call('HDEL', K_META, 'fv') end
local SCRATCH = 'rb:'  -- meta fields summing refunds per refunded entry during a repair
local CLOSED_BY = 'hc:'  -- meta fields: hold id -> its closing entry, during a repair

local function next_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return ms .. '-' .. fmt(tonumber(seq) + 1)
end

local function is_scratch(name)
  local head = string.sub(name, 1, 3)
  return head == SCRATCH or head == CLOSED_BY
end

local function clear_scratch()
  local names = redis.call('HKEYS', K_META)
  for i = 1, #names do
    if is_scratch(names[i]) then redis.call('HDEL', K_META, names[i]) end
  end
end

if start == '' then
  local m = redis.call('HMGET', K_META, 'ckpt_id', 'ckpt_sum', 'ckpt_count',
                       'base_id', 'base_sum', 'base_count')
  if full then
    if m[4] then
      start, sum, count = m[4], tonumber(m[5]), tonumber(m[6])
      -- Finish a trim cut off between its base and its XTRIM (a no-op otherwise).
      redis.call('XTRIM', K_TXS, 'MINID', next_id(m[4]))
    end
    if rebuild then clear_scratch() end
  elseif m[1] then
    -- A checkpoint written by an earlier version has no count: trusted, and counted from now on.
    start, sum, count = m[1], tonumber(m[2]), tonumber(m[3] or '-1')
  end
end

local function ms_of(id)
  return tonumber(string.match(id, '^(%d+)'))
end

-- == Credit lots: the check every pass makes (lots.lua's invariants) ==================
-- The lots are derived state too. The last chunk of every pass (the cheap one included)
-- checks, in the same script that compares the balance, what holds without the ledger:
-- every record parses and none is negative; the summary's tracked sum is the sum of
-- `remaining` over the records, its head is the first lot of the order zset (with a
-- copy of its record) and its soonest expiry the expiry zset's first; the order zset holds
-- exactly the lots with credits left, scored as lots.lua scores them, and the expiry zset
-- exactly those of them that expire, scored by expiry; the tracked credits are not more
-- than the ledger sum (beyond it only an admin overdraft, owed by the implicit lot '_':
-- the lots then hold nothing). Credits an older SDK took without touching lots leave the
-- tracked sum above the balance until the next script catches up: that is no fault while
-- the latest entry that moved credits records no lots. Reply: '' (agree) or what is wrong:
-- 'record', 'negative', 'summary', 'tracked', 'order', 'expiry', 'over_balance',
-- 'untracked' (fewer credits in the lots than the ledger, see below). Read only:
-- the full repair (lot_reconciliation.py) rebuilds the lots from the ledger.

-- Did the latest entry that moved credits record no lots (an older SDK's write)?
local function lots_latest_untracked()
  local last = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 8)
  for i = 1, #last do
    local v = entry_values(last[i][2])
    if (tonumber(v[2]) or 0) ~= 0 then return lots_in_meta(v[9]) == '' end
  end
  return true
end

-- Does the zset `key` hold exactly the lots `want` (id -> score)? `n` is how many.
-- Returns its members with scores (first first) when it does, else nil.
local function lots_index_agrees(key, want, n)
  local got = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
  if #got ~= 2 * n then return nil end
  for i = 1, #got, 2 do
    if want[got[i]] ~= tonumber(got[i + 1]) then return nil end
  end
  return got
end

-- Every record is read up to this many lots; beyond it (an account with many drained lots,
-- which keep their records) only the open lots (the order zset's) and the summary are: a
-- drained record gone wrong then shows in the tracked sum, or in the full pass's replay.
local LOTS_READ_ALL = 32

local function lots_records()
  if redis.call('HLEN', K_LOTS) <= LOTS_READ_ALL + 1 then
    return redis.call('HGETALL', K_LOTS)
  end
  local ids = redis.call('ZRANGE', K_LOTQ, 0, -1)
  if #ids > 4000 then return redis.call('HGETALL', K_LOTS) end  -- (unpack's limit)
  ids[#ids + 1] = LOT_SUM
  local recs = redis.call('HMGET', K_LOTS, unpack(ids))
  local all = {}
  for i = 1, #ids do
    if recs[i] then
      all[#all + 1] = ids[i]
      all[#all + 1] = recs[i]
    end
  end
  return all
end

local function lots_problem(ledger_sum)
  local all = lots_records()
  local summary, tracked, n = nil, 0, 0
  local records, order, expiry, n_order, n_expiry = {}, {}, {}, 0, 0
  for i = 1, #all, 2 do
    local id, rec = all[i], all[i + 1]
    if id == LOT_SUM then
      summary = rec
    else
      local r, e, p = string.match(rec, '^(%-?%d+)|%d+|(%d*)|(%d+)|')
      if not r then return 'record' end
      local lot = {remaining = tonumber(r), expires = tonumber(e), priority = tonumber(p)}
      if lot.remaining < 0 then return 'negative' end
      records[id] = rec
      tracked, n = tracked + lot.remaining, n + 1
      if lot.remaining > 0 then
        order[id], n_order = lot_score(lot), n_order + 1
        if lot.expires then expiry[id], n_expiry = lot.expires, n_expiry + 1 end
      end
    end
  end
  local t, rest = nil, ''
  if summary ~= nil then
    t, rest = string.match(summary, '^(%-?%d+)(.*)$')
    if not t then return 'summary' end
    if tonumber(t) ~= tracked then return 'tracked' end
  elseif n > 0 then
    return 'summary'
  end
  local first = lots_index_agrees(K_LOTQ, order, n_order)
  if not first then return 'order' end
  local soonest = lots_index_agrees(K_LOTEXP, expiry, n_expiry)
  if not soonest then return 'expiry' end
  if rest ~= '' then  -- 'tracked' alone is an earlier layout: no head, no soonest
    local e, h, hrec = string.match(rest, '^|(%d*)|([^|]*)|?(.*)$')
    if not e then return 'summary' end
    -- The head is the first lot in consumption order (ties on score by id, as numbers).
    local head = first[1]
    for i = 3, #first, 2 do
      local s, hs = tonumber(first[i + 1]), tonumber(first[2])
      if s == hs and lot_id_before(first[i], head) then head = first[i] end
    end
    if h ~= (head or '') or (h ~= '' and hrec ~= records[h]) then return 'summary' end
    if tonumber(e) ~= (soonest[2] and tonumber(soonest[2]) or nil) then return 'summary' end
  end
  if tracked > math.max(ledger_sum, 0) and not lots_latest_untracked() then
    return 'over_balance'
  end
  -- Less than the ledger: credits no lot tracks, which an account with no credits from
  -- before lots ('lots_all') only has when a writer without lots appended since (its
  -- entries are not in the block sums' count n).
  if tracked < ledger_sum and redis.call('HGET', K_META, 'lots_all') then
    local m = redis.call('HMGET', K_META, 'n', 'base_count')
    if tonumber(m[1]) == tonumber(m[2] or '0') + redis.call('XLEN', K_TXS) then
      return 'untracked'
    end
  end
  return ''
end
-- == end of the credit lots check ========================================================

-- == Credit lots of a compensation entry ===================================================
-- A compensation undoes what the repeat `v` (entry `id`) did to the lots, and records it in
-- its '_sc.l' like any entry (so replaying the ledger moves the same lots). `amount` is the
-- compensation's signed delta. Credits it gives back (the repeat drew them: a debit, a
-- reserve, a negative adjust, a settle's overage) go to the lots the repeat drew from, the
-- last drawn first (lots_give_back: the implicit lot for what it drew beyond the lots). Credits
-- it takes back (the repeat brought them: an opened lot, or a refund, release, expiry or
-- settle that gave back) come off the lots the repeat put them in, as far as those still
-- hold them, and the rest in consumption order. A lot given back to past its expiry lapses
-- in the sweep that ends the repair. The stored balance is left alone (see compensate).
local function compensation_lots(id, v, amount)
  local l = lots_in_meta(v[9])
  if amount > 0 then return lots_encode((lots_give_back(lots_decode(l), amount, 0))) end
  local want, taken = -amount, {}
  local from = lots_decode(l)
  local opened = string.sub(l, 1, 1) == '+'
  if opened then from = {{id, want}} end
  for i = #from, 1, -1 do
    if want == 0 then break end
    local lot = nil
    if from[i][1] ~= LOT_IMPLICIT then lot = lot_get(from[i][1]) end
    if lot and lot.remaining > 0 then
      local n = math.min(from[i][2], lot.remaining, want)
      lot_change(lot, -n)
      taken[#taken + 1] = {lot.id, n}
      want = want - n
    elseif opened and not lot then
      -- The repeat's lot never reached the lots hash (a torn prefix kept its entry alone):
      -- by the ledger it still holds all it opened, and no script drew from it since. The
      -- compensation takes it back from there; the stored lots have nothing to lower.
      taken[#taken + 1] = {id, want}
      want = 0
    end
  end
  if want > 0 then
    local rest = lots_draw(want)
    for i = 1, #rest do taken[#taken + 1] = rest[i] end
  end
  return lots_encode(taken)
end

-- The stored meta of a compensation: its lots record first (as sc_meta places '_sc'),
-- then the note.
local function compensation_meta(note, l)
  if l == '' then return note end
  return '{"_sc":{"l":"' .. l .. '"},' .. string.sub(note, 2)
end
-- == end of the credit lots of a compensation entry ========================================

-- The compensation of `id` already in the ledger, if any: a torn prefix of an earlier repair
-- can keep a compensation entry and lose its mark (written right after it). It names `id`
-- in its ref and its note; it comes after `id` (searched from the newest back, in pages).
-- Only reached for a repeat whose mark is missing, which only a crash makes.
local function compensation_of(id)
  local hi, note = '+', '"entry":"' .. id .. '"'
  while true do
    local page = redis.call('XREVRANGE', K_TXS, hi, '(' .. id, 'COUNT', 256)
    for i = 1, #page do
      local v = entry_values(page[i][2])
      if v[7] == id and string.find(v[9], note, 1, true)
         and string.sub(v[6], 1, 11) == 'reconcile: ' then
        return page[i][1]
      end
    end
    if #page < 256 then return nil end
    hi = '(' .. page[#page][1]
  end
end

-- Compensate a second application with a new entry. It leaves the stored balance alone:
-- whether the balance took the repeat in depends on which writes of the torn transaction
-- survived, and the last chunk sets the balance to the ledger sum (which includes this
-- entry) either way, so a concurrent call never sees a balance corrected twice. The entry's
-- 'balance' field is the stored balance at the time (the final 'adjust' records the fix).
-- It gives back to (or takes from) the lots the repeat moved (compensation_lots). Write
-- order: the entry, the mark that it was written (so a prefix never compensates twice),
-- the lots, the hold record.
local function compensate(id, v, first, why)
  local mark = 'dup:' .. id
  if redis.call('HEXISTS', K_META, mark) == 1 then return end
  local done = compensation_of(id)
  if done then
    redis.call('HSET', K_META, mark, done)
    return
  end
  local bal = tonumber(redis.call('GET', K_BAL) or '0')
  local note = '{"duplicate_of":"' .. first .. '","entry":"' .. id .. '"}'
  local reason = 'reconcile: ' .. why .. ' ' .. id .. ' repeats ' .. first
  local cid = 'none'
  if v[1] == 'reserve' then
    -- A hold nobody was told about: give it back if it is still open.
    -- (No record: the torn transaction lost it; the hold was never usable.)
    local rec = redis.call('HGET', K_HOLDS, id)
    local state, amount = nil, fmt(-(tonumber(v[2]) or 0))
    if rec then state, amount = parse_hold(rec) end
    if state == nil or state == 'O' then
      local stored = compensation_meta(note, compensation_lots(id, v, tonumber(amount)))
      cid = append('release', tonumber(amount), bal, v[4], v[5], reason, id, '', note, stored)
      redis.call('HSET', K_META, mark, cid)
      lots_apply()
      redis.call('HSET', K_HOLDS, id, 'R|' .. amount)
      redis.call('ZREM', K_HOLD_EXP, id)
    end
  else
    local delta = -(tonumber(v[2]) or 0)
    if delta ~= 0 then
      local stored = compensation_meta(note, compensation_lots(id, v, delta))
      cid = append('adjust', delta, bal, 'reconcile', APP, reason, id, '', note, stored)
      redis.call('HSET', K_META, mark, cid)
      lots_apply()
    end
  end
  redis.call('HSET', K_META, mark, cid)
  dups = dups + 1
end

-- The entry `id` ({} when there is none, or `id` is no entry id: a corrupted record).
local function entry_at(id)
  if not string.match(id or '', '^%d+%-%d+$') then return {} end
  return redis.call('XRANGE', K_TXS, id, id)
end

-- Is the entry id `other` below the trim base (trimmed away, not unknown)?
local function trimmed(other)
  local base = redis.call('HGET', K_META, 'base_id')
  local om, os = string.match(other, '^(%d+)-(%d+)$')
  local bm, bs = string.match(base or '', '^(%d+)-(%d+)$')
  if not (om and bm) then return false end
  om, bm = tonumber(om), tonumber(bm)
  return om < bm or (om == bm and tonumber(os) <= tonumber(bs))
end

-- Is this entry a second application of its idempotency key? Rebuilds a record that is
-- missing, unreadable, or names an entry that is not there (and was not trimmed) or
-- carries another key: the record of this entry, as the script wrote it.
local function check_key(id, v)
  local key = v[8]
  if key == '' or v[1] == 'init' or v[1] == 'close' then return false end
  if ms_of(id) < NOW - 2 * IDEM_TTL then return false end  -- its record expired anyway
  local rec = redis.call('HGET', K_IDEM, key) or redis.call('HGET', K_IDEM_PREV, key)
  local sep = rec and string.find(rec, '|', 1, true)
  local other = sep and string.sub(rec, sep + 1)
  if other and other ~= id then
    local seen = entry_at(other)
    if #seen > 0 and entry_values(seen[1][2])[8] ~= key
       or #seen == 0 and not trimmed(other) then
      other = nil
    end
  end
  if not other then
    idem_record_as(key, sc_fields(v[9]) or '*', id)
    rebuilt = rebuilt + 1
    return false
  end
  if other == id then return false end
  -- Two entries of one key less than IDEM_TTL apart cannot both be legitimate (the record
  -- of the first lived at least that long): the one the record does not point at repeats.
  local found = redis.call('XRANGE', K_TXS, other, other)
  if #found == 0 then return false end
  local ov = entry_values(found[1][2])
  if ov[8] ~= key or math.abs(ms_of(other) - ms_of(id)) >= IDEM_TTL then return false end
  compensate(id, v, other, 'idempotency key ' .. key .. ':')
  return true
end

local CLOSE_STATE = {settle = 'S', release = 'R', expire = 'E'}

-- Close a hold the ledger says is closed (settle, release, expire entries name it in ref).
-- A hold closes once: a second closing entry (a torn expiry replayed after the hold was
-- closed again) repeats the first; the one the hold record agrees with stands.
local function close_hold(id, v)
  local hid = v[7]
  if hid == '' then return end
  local seen = redis.call('HGET', K_META, CLOSED_BY .. hid)
  if seen and seen ~= id then
    local found = redis.call('XRANGE', K_TXS, seen, seen)
    local rec = redis.call('HGET', K_HOLDS, hid)
    local state = rec and parse_hold(rec)
    if #found > 0 then
      local fv = entry_values(found[1][2])
      if CLOSE_STATE[fv[1]] ~= state and CLOSE_STATE[v[1]] == state then
        compensate(seen, fv, id, 'hold ' .. hid .. ' closed twice:')
        redis.call('HSET', K_META, CLOSED_BY .. hid, id)
        return
      end
    end
    compensate(id, v, seen, 'hold ' .. hid .. ' closed twice:')
    return
  end
  redis.call('HSET', K_META, CLOSED_BY .. hid, id)
  local rec = redis.call('HGET', K_HOLDS, hid)
  local state, amount = nil, nil
  if rec then state, amount = parse_hold(rec) end
  if state and state ~= 'O' then
    if redis.call('ZREM', K_HOLD_EXP, hid) == 1 then rebuilt = rebuilt + 1 end
    return
  end
  if not amount then
    local found = redis.call('XRANGE', K_TXS, hid, hid)
    if #found == 0 then return end
    amount = fmt(-tonumber(entry_values(found[1][2])[2]))
  end
  local closed
  if v[1] == 'settle' then
    closed = 'S|' .. amount .. '|' .. fmt(tonumber(amount) - tonumber(v[2]))
  elseif v[1] == 'release' then
    closed = 'R|' .. amount
  else
    closed = 'E|' .. amount
  end
  redis.call('HSET', K_HOLDS, hid, closed)
  redis.call('ZREM', K_HOLD_EXP, hid)
  rebuilt = rebuilt + 1
end

-- Does the meta mark `field` name an entry of type `typ` (or one trimmed away)? A mark
-- that names nothing of the kind is rebuilt from the entries, or dropped (see the end).
local function mark_names(field, typ)
  local mark = redis.call('HGET', K_META, field)
  if not mark then return false end
  local found = entry_at(mark)
  if #found == 0 then return trimmed(mark) end
  return entry_values(found[1][2])[1] == typ
end

local function rebuild_entry(id, v)
  local typ = v[1]
  if typ == 'init' then
    if not mark_names('init', 'init') then
      redis.call('HSET', K_META, 'init', id)
      rebuilt = rebuilt + 1
    else
      local first = redis.call('HGET', K_META, 'init')
      if first ~= id and #redis.call('XRANGE', K_TXS, first, first) > 0 then
        compensate(id, v, first, 'init')  -- an account is initialized once, ever
      end
    end
    return
  end
  if typ == 'close' then
    if not mark_names('closed', 'close') then
      redis.call('HSET', K_META, 'closed', id)
      rebuilt = rebuilt + 1
    end
    return
  end
  if check_key(id, v) then return end
  if typ == 'reserve' then
    local rec = redis.call('HGET', K_HOLDS, id)
    if rec and not parse_hold(rec) then rec = nil end  -- unreadable: rebuilt like a lost one
    if not rec then
      local _, _, expires = sc_fields(v[9])
      if expires then
        local amount = fmt(-tonumber(v[2]))
        redis.call('HSET', K_HOLDS, id, 'O|' .. amount .. '|' .. fmt(expires) .. '|' .. v[4]
                   .. '|' .. v[5])
        redis.call('ZADD', K_HOLD_EXP, expires, id)
        rebuilt = rebuilt + 1
      end
    else
      local state, _, expires = parse_hold(rec)
      if state == 'O' and
         tonumber(redis.call('ZSCORE', K_HOLD_EXP, id)) ~= tonumber(expires) then
        redis.call('ZADD', K_HOLD_EXP, tonumber(expires), id)
        rebuilt = rebuilt + 1
      end
    end
  elseif typ == 'settle' or typ == 'release' or typ == 'expire' then
    close_hold(id, v)
  elseif typ == 'refund' and v[7] ~= '' then
    redis.call('HINCRBY', K_META, SCRATCH .. v[7], tonumber(v[2]))
  end
end

-- == Block sums (prelude.lua, ledger_block_add) ========================================
-- The sum the block fields give for the whole ledger (the folded base and the open block:
-- writers fold each block into the base as it closes), and n; nil for an account from
-- before block sums (no 'n').
local function blocks_total()
  local m = redis.call('HMGET', K_META, 'n', 'bo', 'bf')
  local n, bo, bf = tonumber(m[1] or ''), tonumber(m[2] or '0'), tonumber(m[3] or '0')
  if not (n and bo and bf) then return nil end  -- none, or unreadable: seeded again
  return bo + bf, n
end

-- The cheap pass's shortcut: when the block sums add up to the balance and n counts every
-- entry (base_count + XLEN), the whole ledger stands checked up to its newest entry, which
-- becomes the pass's start (sum and count as of it): no entry is read. Any disagreement
-- (entries appended without blocks, a torn script, an account from before blocks) leaves
-- the start where it was: the pass then sums entries as before.
local function blocks_start()
  local total, n = blocks_total()
  if not total then return nil end
  if n ~= tonumber(redis.call('HGET', K_META, 'base_count') or '0')
            + redis.call('XLEN', K_TXS) then
    return nil
  end
  if total ~= tonumber(redis.call('GET', K_BAL) or '0') then return nil end
  local newest = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
  if #newest == 0 then return nil end
  return newest[1][1], total, n
end

-- Make the block fields stand for a ledger whose `n` entries a pass just summed to `total`
-- (read to the end in this script): everything folds into the base, in one HSET (n and
-- the sums together).
-- Entries appended without block sums (a writer without lots among them) may have brought
-- credits no lot tracks: the account's 'lots_all' mark goes with them (a full repair sets
-- it again when the ledger shows every credit in a lot).
local function blocks_seed(total, n)
  local t, have = blocks_total()
  if t == total and have == n then return end
  redis.call('HSET', K_META, 'n', fmt(n), 'bo', '0', 'bf', fmt(total), 'bfn', fmt(n))
  if have ~= n then redis.call('HDEL', K_META, 'lots_all') end
end
-- == end of block sums =================================================================

local blocks_agree = false
if ARGV[9] == '' and not full then
  local id, total, n = blocks_start()
  if id then start, sum, count, blocks_agree = id, total, n, true end
end

local from = '-'
if start ~= '' then from = '(' .. start end
local entries = redis.call('XRANGE', K_TXS, from, '+', 'COUNT', chunk)
local last = start
for i = 1, #entries do
  local f = entries[i][2]
  local d = nil
  if f[3] == 'delta' then
    d = f[4]
  else
    for j = 1, #f, 2 do
      if f[j] == 'delta' then d = f[j + 1] break end
    end
  end
  sum = sum + (tonumber(d or '0') or 0)
  if count >= 0 then count = count + 1 end
  last = entries[i][1]
  if rebuild then rebuild_entry(last, entry_values(f)) end
end
local read = fmt(#entries)
-- A chunk that compensated appended entries after its own: the next chunk sums them.
if #entries == chunk or dups > 0 then
  return {'more', last, fmt(sum), fmt(count), read, fmt(rebuilt), fmt(dups)}
end

local function finish(status, id, balance)
  return {status, id, fmt(sum), fmt(count), read, fmt(rebuilt), fmt(dups), fmt(balance),
          lots_problem(sum)}
end

if rebuild then
  -- The refunds hash from the refund entries. This chunk read to the end of the ledger in
  -- this same script, so the sums are exact now (a refund after it adds its own
  -- increment); a refunded entry's refunds are never older than it, so a trim that kept
  -- the entry kept them. A total with no refund entry behind it goes, unless its entry is
  -- gone too (trimmed: nothing can be refunded there any more).
  local totals = {}
  local names = redis.call('HKEYS', K_META)
  for i = 1, #names do
    if string.sub(names[i], 1, 3) == SCRATCH then
      totals[string.sub(names[i], 4)] = redis.call('HGET', K_META, names[i])
    end
    if is_scratch(names[i]) then redis.call('HDEL', K_META, names[i]) end
  end
  for eid, total in pairs(totals) do
    if redis.call('HGET', K_REFUNDS, eid) ~= total then
      redis.call('HSET', K_REFUNDS, eid, total)
      rebuilt = rebuilt + 1
    end
  end
  -- A mark naming no entry of its kind (none in the ledger set it) goes.
  for field, typ in pairs({init = 'init', closed = 'close'}) do
    if redis.call('HEXISTS', K_META, field) == 1 and not mark_names(field, typ) then
      redis.call('HDEL', K_META, field)
      rebuilt = rebuilt + 1
    end
  end
  -- The expiry index holds open holds only (a member without an open record goes).
  local indexed = redis.call('ZRANGE', K_HOLD_EXP, 0, -1)
  for i = 1, #indexed do
    local rec = redis.call('HGET', K_HOLDS, indexed[i])
    if not (rec and parse_hold(rec) == 'O') then
      redis.call('ZREM', K_HOLD_EXP, indexed[i])
      rebuilt = rebuilt + 1
    end
  end
  local stored = redis.call('HKEYS', K_REFUNDS)
  for i = 1, #stored do
    local eid = stored[i]
    if not totals[eid] and (#entry_at(eid) > 0 or not string.match(eid, '^%d+%-%d+$')) then
      redis.call('HDEL', K_REFUNDS, eid)
      rebuilt = rebuilt + 1
    end
  end
end

local bal = tonumber(redis.call('GET', K_BAL) or '0')
local present = tonumber(redis.call('HGET', K_META, 'base_count') or '0')
                + redis.call('XLEN', K_TXS)
if count < 0 then count = present end  -- adopting a checkpoint written by an earlier version
if not full and count ~= present then return finish('stale', last, bal) end
if bal == sum then
  if not blocks_agree then blocks_seed(sum, count) end
  if last ~= '' then
    redis.call('HSET', K_META, 'ckpt_id', last, 'ckpt_sum', fmt(sum), 'ckpt_count', fmt(count))
  end
  return finish('ok', last, bal)
end
if not rebuild then return finish('mismatch', last, bal) end
local note = '{"found_balance":' .. fmt(bal) .. ',"ledger_sum":' .. fmt(sum) .. '}'
blocks_seed(sum, count)
local id = append('adjust', 0, sum, 'reconcile', APP,
                  'reconcile: balance was ' .. fmt(bal) .. ', the ledger sums to ' .. fmt(sum),
                  '', '', note)
redis.call('SET', K_BAL, fmt(sum))
count = count + 1
redis.call('HSET', K_META, 'ckpt_id', id, 'ckpt_sum', fmt(sum), 'ckpt_count', fmt(count))
return finish('repaired', id, bal)
