--: argv amount payment_id source reason metadata priority expires_ms
--: keys once controls
--: reply mutation
--: refusals overflow expires_past conflict replay_gone
-- purchase: a credit lot keyed by the payment provider's payment id, once EVER: KEYS[11]
-- maps 'purchase:<payment id>' to the lot's entry, so a payment that any event or process
-- delivers again (days later, past the idempotency records' retention) replays it, and a
-- clawback finds the lot by the same key (revoke.lua). ARGV[9] amount, ARGV[10] payment
-- id, ARGV[11] source, ARGV[12] reason, ARGV[13] metadata, ARGV[14] priority, ARGV[15]
-- expiry (server ms; '' = never). The entry is a 'credit' like credit.lua's.
K_CTL_EXPIRY = KEYS[12]  -- an expired hold gives its spend window back (prelude.lua)
local K_ONCE = KEYS[11]
local FIELD = 'purchase:' .. ARGV[10]
local prior = once_lookup(K_ONCE, FIELD)
if prior then return prior end
local replay = idem_lookup()
if replay then return replay end
local amount, source = tonumber(ARGV[9]), ARGV[11]
local priority = tonumber(ARGV[14])
local expires = nil
if ARGV[15] ~= '' then expires = tonumber(ARGV[15]) end
if expires and expires <= NOW then return {'expires_past', fmt(expires), fmt(NOW)} end
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('credit', amount, bal + amount, source, APP, ARGV[12], '', ARGV[13],
              function(id)
                lots_open(id, amount, priority, expires, source, bal)
                redis.call('HSET', K_ONCE, FIELD, id)
              end,
              ',"l":"' .. lots_opening(priority, expires) .. '"')
