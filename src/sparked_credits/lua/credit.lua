-- credit (grant, purchase, referral...): ARGV[9] amount, ARGV[10] source, ARGV[11] reason,
-- ARGV[12] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
local amount = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('credit', amount, bal + amount, ARGV[10], APP, ARGV[11], '', ARGV[12])
