-- debit: ARGV[7] amount, ARGV[8] action, ARGV[9] reason, ARGV[10] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[7])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
apply_init_if_needed(needs_init, raw)
return commit('debit', -amount, bal - amount, ARGV[8], APP, ARGV[9], '', ARGV[10])
