--: argv role other amount expires_ms cap reason metadata
--: keys referrals controls
--: reply mutation
--: refusals referred_already referral_capped expires_past overflow conflict replay_gone
-- One side of a referral reward (transfers.py drives both): a lot of source 'referral'
-- on this account, recorded in its referrals hash for good (idempotency records expire,
-- a referral does not):
--   role 'referred': 'referred_by' = '<referrer>|<entry id>'; once per account ever,
--     whoever the referrer: another referrer is told 'referred_already';
--   role 'referrer': 'referral:<referred>' = '<referred>|<entry id>', and at most `cap`
--     rewards per UTC month ('0' = no cap) counted in 'rm' (month) and 'rc' (count).
-- A repeat of either side replays its first entry. ARGV[9] role, ARGV[10] the other
-- account, ARGV[11] amount, ARGV[12] expiry (server ms; '' = never), ARGV[13] cap,
-- ARGV[14] reason, ARGV[15] metadata JSON.
K_CTL_EXPIRY = KEYS[12]  -- an expired hold gives its spend window back (prelude.lua)
local K_REF = KEYS[11]
local role, other, amount = ARGV[9], ARGV[10], tonumber(ARGV[11])
local mark = 'referred_by'
if role == 'referrer' then mark = 'referral:' .. other end
local prior = redis.call('HGET', K_REF, mark)
if prior then
  local who, pid = string.match(prior, '^(.*)|([^|]*)$')
  if who ~= other then return {'referred_already', who} end
  local found = redis.call('XRANGE', K_TXS, pid, pid)
  if #found == 0 then return {'replay_gone', pid} end
  return reply_entry(found[1][1], entry_values(found[1][2]), '1')
end
-- No mark: a torn write may have lost it while the entry stayed; the full repair rebuilds
-- the idempotency record from the entry (not the mark), so the record replays it. A
-- record of another referrer's reward (its fingerprint differs) is still 'referred_already'.
local replay = idem_lookup()
if replay then
  if replay[1] == 'conflict' then return {'referred_already', ''} end
  return replay
end
local expires = nil
if ARGV[12] ~= '' then expires = tonumber(ARGV[12]) end
if expires and expires <= NOW then return {'expires_past', fmt(expires), fmt(NOW)} end
local cap, month, count = tonumber(ARGV[13]), utc_month(NOW), 0
if role == 'referrer' then
  local got = redis.call('HMGET', K_REF, 'rm', 'rc')
  if tonumber(got[1] or '') == month then count = tonumber(got[2] or '0') end
  if cap > 0 and count >= cap then return {'referral_capped', fmt(cap)} end
end
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('credit', amount, bal + amount, 'referral', APP, ARGV[14], '', ARGV[15],
              function(id)
                lots_open(id, amount, DEFAULT_PRIORITY, expires, 'referral', bal)
                redis.call('HSET', K_REF, mark, other .. '|' .. id)
                if role == 'referrer' then
                  redis.call('HSET', K_REF, 'rm', fmt(month), 'rc', fmt(count + 1))
                end
              end,
              ',"l":"' .. lots_opening(DEFAULT_PRIORITY, expires) .. '"')
