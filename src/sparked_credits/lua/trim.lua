--: argv before
--: reply trimmed
-- trim an account's ledger: remove entries older than ARGV[9] (an entry id), but never an
-- entry after the last reconciliation checkpoint (the checkpoint's running sum stands for
-- everything up to it) nor an open hold's reserve entry (a full repair rebuilds the hold
-- from it). XTRIM MINID, never MAXLEN ('~' would cut whole nodes past the point).
-- The removed entries' sum and count join the trim base (meta base_id/base_sum/base_count)
-- BEFORE the XTRIM: a prefix that stops between the two leaves a base that already stands
-- for entries still present, which the full pass skips (it starts after base_id) and
-- finishes trimming; the cheap pass sees the count and falls back to the full pass.
-- The credit lots as of the base (base_lots, see the section below) are written in the same
-- HSET, so a full repair rebuilds lots opened before the base.
-- Reply {'trimmed', n, minid} or {'no_checkpoint'}.
local ck = redis.call('HGET', K_META, 'ckpt_id')
if not ck then return {'no_checkpoint'} end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local minid = ARGV[9]
if older(ck, minid) then minid = ck end
local open = redis.call('ZRANGE', K_HOLD_EXP, 0, -1)
for i = 1, #open do
  if older(open[i], minid) then minid = open[i] end
end
-- Finish a trim cut off between its base and its XTRIM first (as the full pass does): the
-- entries the base already stands for must not join it again.
local prior = redis.call('HGET', K_META, 'base_id')
if prior then
  local ms, seq = string.match(prior, '^(%d+)-(%d+)$')
  redis.call('XTRIM', K_TXS, 'MINID', ms .. '-' .. fmt(tonumber(seq) + 1))
end
local gone = redis.call('XRANGE', K_TXS, '-', '(' .. minid)
if #gone == 0 then return {'trimmed', '0', minid} end

-- == Credit lots at the trim base ==========================================================
-- Meta base_lots: the lots the removed entries leave, as replaying them gives them
-- (_core/lots.py LotBook.replay, the same rules): 'id=record id=record ...' (lots.lua's
-- record, drained lots included: credits given back later find them), '' for none. The
-- full repair (lot_reconciliation.py) starts its replay from it after base_id. Absent
-- beside a base_id: a trim by an earlier version left lots nobody can replay, and it stays
-- absent (those lots are reported as not replayed).
local function base_lots_load(packed)
  local book = {}
  for id, rec in string.gmatch(packed, '([^ =]+)=([^ ]*)') do
    local r, a, e, p, src = string.match(rec, '^(%-?%d+)|(%d+)|(%d*)|(%d+)|(.*)$')
    book[id] = {id = id, remaining = tonumber(r), amount = tonumber(a), expires = tonumber(e),
                priority = tonumber(p), source = src}
  end
  return book
end

local function base_lots_tracked(book)
  local t = 0
  for _, lot in pairs(book) do t = t + lot.remaining end
  return t
end

-- Credits taken without touching lots (an entry recording none) come off the lots in
-- consumption order when the next entry that records lots is replayed.
local function base_lots_catch_up(book, bal)
  local t = base_lots_tracked(book)
  if t <= bal then return end
  local left = math.min(t - bal, t)
  local open = {}
  for _, lot in pairs(book) do
    if lot.remaining > 0 then open[#open + 1] = lot end
  end
  table.sort(open, lot_before)
  for i = 1, #open do
    if left == 0 then break end
    local n = math.min(left, open[i].remaining)
    open[i].remaining, left = open[i].remaining - n, left - n
  end
end

-- Replay one entry (values in FIELDS order) onto the book at balance `bal`; returns the
-- balance after it.
local function base_lots_replay(book, bal, id, v)
  local delta = tonumber(v[2]) or 0
  local l = lots_in_meta(v[9])
  local prio, exp = string.match(l, '^%+(%d+):?(%d*)$')
  if prio then
    base_lots_catch_up(book, bal)
    local owed = math.max(0, base_lots_tracked(book) - bal)
    local source = v[4]
    if v[1] == 'init' or v[1] == 'adjust' then source = v[1] end
    book[id] = {id = id, remaining = delta - math.min(owed, delta), amount = delta,
                expires = tonumber(exp), priority = tonumber(prio), source = source}
    return bal + delta
  end
  local moves = lots_decode(l)
  if #moves == 0 then return bal + delta end
  base_lots_catch_up(book, bal)
  local sign = 1
  if delta <= 0 then sign = -1 end
  for i = 1, #moves do
    local lot = book[moves[i][1]]
    if moves[i][1] ~= LOT_IMPLICIT and lot then
      lot.remaining = lot.remaining + sign * moves[i][2]
    end
  end
  return bal + delta
end

-- The meta fields to write beside the base: {'base_lots', packed}, or {} (not known).
local function base_lots_fields(entries)
  local had = redis.call('HMGET', K_META, 'base_id', 'base_sum', 'base_lots')
  if had[1] and not had[3] then return {} end
  local book, bal = base_lots_load(had[3] or ''), tonumber(had[2] or '0')
  for i = 1, #entries do
    bal = base_lots_replay(book, bal, entries[i][1], entry_values(entries[i][2]))
  end
  local ids = {}
  for id in pairs(book) do ids[#ids + 1] = id end
  table.sort(ids)
  local parts = {}
  for i = 1, #ids do parts[i] = ids[i] .. '=' .. lot_record(book[ids[i]]) end
  local fields = {'base_lots', table.concat(parts, ' ')}
  return fields
end
-- == end of the credit lots at the trim base ===============================================

local base = redis.call('HMGET', K_META, 'base_sum', 'base_count')
local s, n = tonumber(base[1] or '0'), tonumber(base[2] or '0')
for i = 1, #gone do
  local f = gone[i][2]
  for j = 1, #f, 2 do
    if f[j] == 'delta' then s = s + (tonumber(f[j + 1]) or 0) break end
  end
end
redis.call('HSET', K_META, 'base_id', gone[#gone][1], 'base_sum', fmt(s),
           'base_count', fmt(n + #gone), unpack(base_lots_fields(gone)))
local removed = redis.call('XTRIM', K_TXS, 'MINID', minid)
return {'trimmed', fmt(removed), minid}
