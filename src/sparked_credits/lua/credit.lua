-- credit (grant, purchase, referral...): ARGV[7] amount, ARGV[8] source, ARGV[9] reason,
-- ARGV[10] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
local amount = tonumber(ARGV[7])
local bal, needs_init, raw = load_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('credit', amount, bal + amount, ARGV[8], APP, ARGV[9], '', ARGV[10])
