-- Credit lots, put into the prelude at its '@lots' line (see scripts.py).
--
-- KEYS: 8 lots hash, 9 lot order zset, 10 lot expiry zset.
-- The lots hash maps a lot id (the id of the entry that opened it) to
-- 'remaining|amount|expires|priority|source' (expires '' = never), and the field '' to the
-- summary 'tracked|soonest expiry|head id|head record': the sum of `remaining` over its
-- lots (the tracked credits), the soonest expiry among the open lots ('' = none), and the
-- first open lot in consumption order with a copy of its record ('' = none). With it, a
-- debit that its first lot covers reads one field and writes one HSET, and a script finds
-- out that no lot is due without reading the expiry zset.
-- The balance beyond the tracked sum (credits written before lots existed, or by an older
-- SDK during a rolling upgrade) is the implicit lot '_': never expiring, consumed after
-- every other. A balance below the tracked sum means someone took credits without touching
-- lots (an older SDK's debit): the next script takes the difference from the lots in
-- consumption order (lots_catch_up), which is what replaying the ledger does for an entry
-- that records no lots.
-- The order zset holds the lots with credits left, scored so that ZRANGE is the consumption
-- order: priority * 2^45 + expiry ms (2^45 - 1 for never), ties by id (oldest first). The
-- expiry zset holds the lots with credits left and an expiry, scored by expiry.
-- A drained lot keeps its record (remaining 0), so credits given back to it later still find
-- its expiry and priority.
-- Lot changes are planned in a per-script cache and written by lots_apply(), so a script
-- decides where in its write order they land.
local K_LOTS, K_LOTQ, K_LOTEXP = KEYS[8], KEYS[9], KEYS[10]
-- LOT_SPAN (2^45 ms, past year 3000: the order score's expiry part) comes from Python.
local LOT_SUM = ''
local LOT_IMPLICIT = '_'
local LOT_EXPIRE_BATCH = 16  -- expired lots per script call, to bound its work

local lot_cache = {}       -- id -> lot, loaded this script
local lot_dirty = {}       -- lots changed this script, in order
local lot_tracked = nil    -- sum of remaining over tracked lots, read once
local lot_soonest = false  -- soonest expiry of an open lot: a number, nil (none), false (unknown)
local lot_head = false     -- id of the first open lot: a string, nil (none), false (unknown)
local lot_reopened = false -- a lot went from empty to open this script: the head may move
local lot_lapsed = 0       -- credits lapsed this script (reported with the call's result)
local lot_summary_written = nil  -- the summary lots_apply wrote last (the fast view's copy)

local function lot_from(id, rec)
  local r, a, e, p, s = string.match(rec, '^(%d+)|(%d+)|(%d*)|(%d+)|(.*)$')
  local lot = {id = id, remaining = tonumber(r), amount = tonumber(a), expires = tonumber(e),
               priority = tonumber(p), source = s}
  lot.was = lot.remaining
  lot_cache[id] = lot
  return lot
end

local function lot_record(lot)
  return fmt(lot.remaining) .. '|' .. fmt(lot.amount) .. '|' ..
    (lot.expires and fmt(lot.expires) or '') .. '|' .. fmt(lot.priority) .. '|' .. lot.source
end

-- Read the summary once per script ('tracked' alone, as an earlier layout wrote it, leaves
-- the head and the soonest expiry unknown: they are then read from the zsets).
local function lots_tracked()
  if lot_tracked == nil then
    local summary = redis.call('HGET', K_LOTS, LOT_SUM)
    if not summary then
      -- No lots at all (an account from before lots, or the TypeScript SDK's).
      lot_tracked, lot_soonest, lot_head = 0, nil, nil
      return 0
    end
    local t, e, h, rec = string.match(summary, '^(%-?%d+)|(%d*)|([^|]*)|?(.*)$')
    if t then
      lot_tracked, lot_soonest = tonumber(t), tonumber(e)
      if h ~= '' then
        lot_head = h
        if not lot_cache[h] then lot_from(h, rec) end
      else
        lot_head = nil
      end
    else
      lot_tracked = tonumber(summary) or 0
    end
  end
  return lot_tracked
end

local function lot_get(id)
  local lot = lot_cache[id]
  if lot then return lot end
  local rec = redis.call('HGET', K_LOTS, id)
  if not rec then return nil end
  return lot_from(id, rec)
end

local function lot_change(lot, n)
  if lot.remaining == 0 and n > 0 then lot_reopened = true end
  lot.remaining = lot.remaining + n
  lot.rec = nil
  lot_tracked = lots_tracked() + n
  if not lot.dirty then
    lot.dirty = true
    lot_dirty[#lot_dirty + 1] = lot
  end
end

local function lot_score(lot)
  return lot.priority * LOT_SPAN + (lot.expires or (LOT_SPAN - 1))
end

-- Lot ids are stream ids '<ms>-<seq>': the older lot has the smaller ms, then the smaller
-- seq, both compared as numbers ('<ms>-2' opened before '<ms>-10').
local function lot_id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not (am and bm) then return a < b end
  am, bm = tonumber(am), tonumber(bm)
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end

-- Does lot a come before lot b in consumption order?
local function lot_before(a, b)
  local sa, sb = lot_score(a), lot_score(b)
  if sa ~= sb then return sa < sb end
  return lot_id_before(a.id, b.id)
end

-- The order zset's members from position `start` in consumption order: `n` of them, or
-- more so that a slice never ends inside a run of lots that ZRANGE may misorder. Members
-- tied on score come in text order, and ids of one millisecond ('<ms>-<seq>') only differ
-- from their number order once a seq has two digits ('<ms>-10' before '<ms>-2'): such a
-- run is contiguous (the ms part leads the text) and is read whole (one member ahead
-- tells whether it goes on), then each slice is sorted by (score, ms, seq) as numbers.
-- A run of one-digit seqs is in order already, so a slice without a wider seq (the
-- common one) is one plain ZRANGE, taken as it comes.
-- Returns the ids and the position after them.
local function lot_id_wide(id)
  return string.match(id, '%-%d%d+$') ~= nil
end

local function lots_slice(start, n)
  local plain = redis.call('ZRANGE', K_LOTQ, start, start + n)
  local wide = false
  for i = 1, #plain do
    if lot_id_wide(plain[i]) then
      wide = true
      break
    end
  end
  if not wide then
    plain[n + 1] = nil
    return plain, start + #plain
  end
  local ids, score = {}, {}
  local function read(from, count)
    local got = redis.call('ZRANGE', K_LOTQ, from, from + count - 1, 'WITHSCORES')
    for i = 1, #got, 2 do
      ids[#ids + 1] = got[i]
      score[got[i]] = tonumber(got[i + 1])
    end
    return #got
  end
  local function same_run(a, b)
    return score[a] == score[b] and string.match(a, '^(%d+)-') == string.match(b, '^(%d+)-')
  end
  -- Does the run that ends at position k hold a seq of two digits or more?
  local function run_wide(k)
    local i = k
    while i >= 1 and same_run(ids[i], ids[k]) do
      if lot_id_wide(ids[i]) then return true end
      i = i - 1
    end
    return false
  end
  local more = read(start, n + 1)
  local k = math.min(n, #ids)
  while k < #ids and same_run(ids[k + 1], ids[k]) and (lot_id_wide(ids[k + 1]) or run_wide(k)) do
    k = k + 1
    if k == #ids and more > 0 then more = read(start + k, n + 1) end
  end
  for i = #ids, k + 1, -1 do ids[i] = nil end
  if k > 1 then
    local ms, seq = {}, {}  -- each id's parts as numbers, parsed once for the sort
    for i = 1, k do
      local m, q = string.match(ids[i], '^(%d+)-(%d+)$')
      ms[ids[i]], seq[ids[i]] = tonumber(m) or 0, tonumber(q) or 0
    end
    table.sort(ids, function(a, b)
      if score[a] ~= score[b] then return score[a] < score[b] end
      if ms[a] ~= ms[b] then return ms[a] < ms[b] end
      if seq[a] ~= seq[b] then return seq[a] < seq[b] end
      return a < b
    end)
  end
  return ids, start + k
end

-- Write every lot changed by this script, the zsets, and the summary, in one HSET. The
-- head and soonest expiry are kept without reading the zsets, except when the head drains
-- or the soonest-expiring lot closes.
local function lots_apply()
  if #lot_dirty == 0 then return end
  lots_tracked()
  local args = {'HSET', K_LOTS, LOT_SUM, ''}
  local head = lot_head and lot_cache[lot_head] or nil
  local recheck_head = lot_head == false or (head ~= nil and head.remaining == 0)
  local recheck_soonest = lot_soonest == false
  for i = 1, #lot_dirty do
    local lot = lot_dirty[i]
    local rec = lot_record(lot)
    lot.rec = rec  -- the record as written, reused for the summary's head copy
    args[#args + 1] = lot.id
    args[#args + 1] = rec
    if lot.remaining > 0 then
      if lot.was == 0 then
        redis.call('ZADD', K_LOTQ, lot_score(lot), lot.id)
        if lot.expires then redis.call('ZADD', K_LOTEXP, lot.expires, lot.id) end
      end
      if not recheck_head and lot ~= head and (head == nil or lot_before(lot, head)) then
        head = lot
      end
      if lot.expires and not recheck_soonest and
         (lot_soonest == nil or lot.expires < lot_soonest) then
        lot_soonest = lot.expires
      end
    elseif lot.was > 0 then
      redis.call('ZREM', K_LOTQ, lot.id)
      if lot.expires then
        redis.call('ZREM', K_LOTEXP, lot.id)
        if lot.expires == lot_soonest then recheck_soonest = true end
      end
    end
    lot.was, lot.dirty = lot.remaining, false
  end
  if recheck_head then
    local first = lots_slice(0, 1)
    head = nil
    if #first > 0 then head = lot_get(first[1]) end
  end
  if recheck_soonest then
    local first = redis.call('ZRANGE', K_LOTEXP, 0, 0, 'WITHSCORES')
    lot_soonest = nil
    if #first > 0 then lot_soonest = tonumber(first[2]) end
  end
  lot_head = head and head.id or nil
  args[4] = lots_summary_text(lot_tracked, lot_soonest and fmt(lot_soonest) or '',
                              head and head.id, head and (head.rec or lot_record(head)))
  -- Lots written with no entry of this script before them (a catch-up with credits taken
  -- without lots, in grants, sweep or a revoke of nothing) leave the block sums' 'n' where
  -- it was: drop the debit's fast view, whose stamp would still match (prelude.lua).
  if not LEDGER_N and not lot_summary_written then redis.call('HDEL', K_META, 'fv') end
  redis.call(unpack(args))
  lot_summary_written = args[4]
  lot_dirty = {}
  lot_reopened = false
end

-- Take `amount` from the lots in consumption order, the implicit lot last (and beyond it,
-- for an admin overdraft); returns the draws {{id, n}, ...}. When the first lot covers it
-- (and no lot reopened in this script), no zset is read.
local function lots_draw(amount)
  lots_tracked()
  if lot_head and not lot_reopened then
    local head = lot_cache[lot_head]
    if head and head.remaining >= amount then
      lot_change(head, -amount)
      return {{head.id, amount}}
    end
  end
  local draws, left, start = {}, amount, 0
  while left > 0 do
    local ids
    ids, start = lots_slice(start, 4)
    if #ids == 0 then break end
    local recs = nil
    for i = 1, #ids do
      local lot = lot_cache[ids[i]]
      if not lot then
        if not recs then recs = redis.call('HMGET', K_LOTS, unpack(ids)) end
        if recs[i] then lot = lot_from(ids[i], recs[i]) end
      end
      if lot and lot.remaining > 0 then
        local n = math.min(left, lot.remaining)
        lot_change(lot, -n)
        draws[#draws + 1] = {lot.id, n}
        left = left - n
        if left == 0 then break end
      end
    end
  end
  if left > 0 then draws[#draws + 1] = {LOT_IMPLICIT, left} end
  return draws
end

-- Credits taken without touching lots (an older SDK's debit, an overdraft) leave `bal`
-- below the tracked sum: take the difference from the lots in order.
local function lots_catch_up(bal)
  local tracked = lots_tracked()
  if tracked > bal then lots_draw(math.min(tracked - bal, tracked)) end
end

-- The admin overdraft still owed at balance `bal` (after lots_catch_up): what credits
-- that arrive or come back pay off first.
local function lots_owed(bal)
  return math.max(0, lots_tracked() - bal)
end

-- Open the lot `id` (the entry that brings its credits). Credits owed from an overdraft
-- (a negative balance `bal` before them, after lots_catch_up) are paid off first.
local function lots_open(id, amount, priority, expires, source, bal)
  local owed = lots_owed(bal)
  local lot = {id = id, remaining = 0, amount = amount, expires = expires,
               priority = priority, source = source, was = 0}
  lot_cache[id] = lot
  -- Marked dirty even when all of it paid a debt: its record is kept.
  lot_change(lot, amount - math.min(owed, amount))
  return lot
end

-- 'id:n,id:n' <-> {{id, n}, ...}: the compact record of lots drawn or given back.
local function lots_encode(list)
  local parts = {}
  for i = 1, #list do parts[i] = list[i][1] .. ':' .. fmt(list[i][2]) end
  return table.concat(parts, ',')
end

local function lots_decode(s)
  local list = {}
  if s == nil or s == '' or string.sub(s, 1, 1) == '+' then return list end
  for id, n in string.gmatch(s, '([^:,]+):(%d+)') do list[#list + 1] = {id, tonumber(n)} end
  return list
end

-- The stored meta of an entry the SDK writes on its own (init, a hold's expiry, a lapse):
-- only the '_sc' member, holding the lots record.
local function lots_meta(l)
  if l == '' then return '' end
  return '{"_sc":{"l":"' .. l .. '"}}'
end

-- The lots record of a stored entry's meta ('' for none).
local function lots_in_meta(meta)
  return string.match(meta or '', '^{"_sc":{[^}]*"l":"([^"]*)"') or ''
end

-- What the entry `id` drew (a hold's reserve entry), {} when it recorded nothing (written
-- before lots) or is gone: its credits then go back to the implicit lot.
local function lots_of_entry(id)
  local found = redis.call('XRANGE', K_TXS, id, id)
  if #found == 0 then return {} end
  local f = found[1][2]
  for i = 1, #f, 2 do
    if f[i] == 'meta' then return lots_decode(lots_in_meta(f[i + 1])) end
  end
  return {}
end

-- The opening record of a lot, in its entry's '_sc.l': '+priority' or
-- '+priority:expires'.
local function lots_opening(priority, expires)
  if expires then return '+' .. fmt(priority) .. ':' .. fmt(expires) end
  return '+' .. fmt(priority)
end

-- The first `amount` credits of `draws` (what a settle keeps of a hold's draws).
local function lots_head(draws, amount)
  local head = {}
  for i = 1, #draws do
    if amount <= 0 then break end
    local n = math.min(draws[i][2], amount)
    head[#head + 1] = {draws[i][1], n}
    amount = amount - n
  end
  return head
end

-- Give `amount` back to the lots `draws` came from, the last drawn first, after skipping
-- `skip` credits already given back (earlier partial refunds). Credits beyond what the
-- draws recorded (an entry written before lots) go to the implicit lot. While an admin
-- overdraft is owed (`owed`, lots_owed), the first credits given back pay it off (recorded
-- as the implicit lot's, like an overdraft's draw): only the rest reach the lots, as the
-- credits after them on the same walk. Returns the returns {{id, n}, ...} and the lots
-- given back to that are past their expiry.
local function lots_give_back(draws, amount, skip, owed)
  local back, lapsed = {}, {}
  local paid = math.min(owed or 0, amount)
  if paid > 0 then
    back[1] = {LOT_IMPLICIT, paid}
    amount, skip = amount - paid, skip + paid
  end
  for i = #draws, 1, -1 do
    if amount == 0 then break end
    local n = draws[i][2]
    local skipped = math.min(skip, n)
    skip, n = skip - skipped, math.min(n - skipped, amount)
    if n > 0 then
      local lot = nil
      if draws[i][1] ~= LOT_IMPLICIT then lot = lot_get(draws[i][1]) end
      if lot then
        lot_change(lot, n)
        if lot.expires and lot.expires <= NOW and not lot.lapsing then
          lot.lapsing = true
          lapsed[#lapsed + 1] = lot
        end
        back[#back + 1] = {lot.id, n}
      else
        back[#back + 1] = {LOT_IMPLICIT, n}
      end
      amount = amount - n
    end
  end
  if amount > 0 then back[#back + 1] = {LOT_IMPLICIT, amount} end
  return back, lapsed
end

-- A lot past its expiry loses what it has left through its own 'lot_expire' entry (not a
-- hold's 'expire', not usage): one unit (XADD, lots, balance last). `bal` is the balance
-- before; the balance after is returned.
local function lot_lapse(lot, bal)
  local n = lot.remaining
  lot.lapsing = nil
  if n <= 0 then return bal end
  lot_change(lot, -n)
  lot_lapsed = lot_lapsed + n
  local after = bal - n
  append('lot_expire', -n, after, lot.source, APP, 'credits expired', lot.id, '', '',
         lots_meta(lot.id .. ':' .. fmt(n)))
  lots_apply()
  redis.call('SET', K_BAL, fmt(after))
  return after
end

-- Expire up to `limit` lots past their expiry (server time); returns how many were due.
local function lots_expire_due(limit)
  lots_tracked()
  if lot_soonest == nil or (lot_soonest and lot_soonest > NOW) then return 0 end
  local due = redis.call('ZRANGEBYSCORE', K_LOTEXP, '-inf', NOW, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local bal = tonumber(redis.call('GET', K_BAL) or '0')
  for i = 1, #due do
    local lot = lot_get(due[i])
    if lot and lot.remaining > 0 then
      bal = lot_lapse(lot, bal)
    else
      redis.call('ZREM', K_LOTEXP, due[i])
    end
  end
  lots_apply()
  return #due
end

-- Expire the lots that credits were just given back to, after the entry that gave them.
local function lots_lapse_all(lapsed, bal)
  for i = 1, #lapsed do bal = lot_lapse(lapsed[i], bal) end
  return bal
end

-- Every lot with credits left, in consumption order: {id, record, id, record, ...}.
local function lots_open_records()
  local ids = lots_slice(0, math.max(redis.call('ZCARD', K_LOTQ), 1))
  local out = {}
  if #ids == 0 then return out end
  local recs = redis.call('HMGET', K_LOTS, unpack(ids))
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = recs[i] or ''
  end
  return out
end
