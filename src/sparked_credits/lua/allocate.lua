--: argv amount period_id expires_ms rollover_cap source priority reason metadata
--: keys once controls
--: reply allocation
--: refusals overflow expires_past conflict replay_gone
-- allocate: a period's credits (a subscription's month), once EVER per (account, period):
-- KEYS[11] maps 'allocate:<period id>' to the allocation's entry. In this one script:
--   1. the unused credits of the previous allocation (the open lots of the same source
--      that expire, no later than this period's expiry) carry into this period up to
--      ARGV[12] (rollover cap) as a lot of their own: two 'rollover' entries, one drawing
--      them from the old lots, one opening the new lot with this period's expiry and
--      priority (the same as the allocation's, and older: spent first);
--   2. what is left of those lots lapses, each with its 'lot_expire' entry;
--   3. the allocation's own 'credit' entry opens its lot ('_sc.ro' rolled over, '_sc.ex'
--      lapsed, for a replay's reply).
-- A torn prefix that stops after 1 or 2 leaves complete units: a retry carries the
-- rollover lot (same source) again, harmlessly, and then allocates.
-- ARGV[9] amount, ARGV[10] period id, ARGV[11] expiry (server ms), ARGV[13] source,
-- ARGV[14] priority, ARGV[15] reason, ARGV[16] metadata.
-- Reply {'allocated', replayed, grant id, rolled over, expired, balance, <mutation reply>}.
K_CTL_EXPIRY = KEYS[12]  -- an expired hold gives its spend window back (prelude.lua)
local K_ONCE = KEYS[11]
local amount, period = tonumber(ARGV[9]), ARGV[10]
local expires, cap = tonumber(ARGV[11]), tonumber(ARGV[12])
local source, priority = ARGV[13], tonumber(ARGV[14])
local FIELD = 'allocate:' .. period

local function allocated(r, ro, ex)
  if not ro then
    ro = string.match(r[12], '^{"_sc":{[^}]*"ro":(%d+)') or '0'
    ex = string.match(r[12], '^{"_sc":{[^}]*"ex":(%d+)') or '0'
  end
  local out = {'allocated', r[2], r[3], ro, ex, r[6]}
  for i = 1, #r do out[#out + 1] = r[i] end
  return out
end

local prior = once_lookup(K_ONCE, FIELD)
if prior then
  if prior[1] == 'ok' then return allocated(prior) end
  return prior
end
local replay = idem_lookup()
if replay then
  if replay[1] == 'ok' then return allocated(replay) end
  return replay
end
if expires <= NOW then return {'expires_past', fmt(expires), fmt(NOW)} end
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end

-- The previous allocation's lots, in consumption order: what carries, what lapses.
local draws, lapsing, carry, left = {}, {}, 0, cap
local ids = redis.call('ZRANGE', K_LOTQ, 0, -1)
for i = 1, #ids do
  local lot = lot_get(ids[i])
  if lot and lot.remaining > 0 and lot.source == source and lot.expires and
     lot.expires <= expires then
    local c = math.min(left, lot.remaining)
    if c > 0 then
      draws[#draws + 1] = {lot.id, c}
      left, carry = left - c, carry + c
    end
    if lot.remaining > c then lapsing[#lapsing + 1] = lot end
  end
end
local opening = lots_opening(priority, expires)
if carry > 0 then
  for i = 1, #draws do lot_change(lot_cache[draws[i][1]], -draws[i][2]) end
  local out_id = append('rollover', -carry, bal - carry, source, APP,
                        'carried into period ' .. period, '', '', '',
                        lots_meta(lots_encode(draws)))
  lots_apply()
  redis.call('SET', K_BAL, fmt(bal - carry))
  local in_id = append('rollover', carry, bal, source, APP, 'carried over from earlier periods',
                       out_id, '', '', lots_meta(opening))
  lots_open(in_id, carry, priority, expires, source, bal - carry)
  lots_apply()
  redis.call('SET', K_BAL, fmt(bal))
end
local expired = 0
for i = 1, #lapsing do
  expired = expired + lapsing[i].remaining
  bal = lot_lapse(lapsing[i], bal)
end
local reply = commit('credit', amount, bal + amount, source, APP, ARGV[15], '', ARGV[16],
                     function(id)
                       lots_open(id, amount, priority, expires, source, bal)
                       redis.call('HSET', K_ONCE, FIELD, id)
                     end,
                     ',"l":"' .. opening .. '","ro":' .. fmt(carry) .. ',"ex":' .. fmt(expired))
return allocated(reply, fmt(carry), fmt(expired))
