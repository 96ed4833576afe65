--: argv amount action reason metadata
--: reply mutation
--: refusals closed insufficient conflict replay_gone
-- debit: ARGV[9] amount, ARGV[10] action, ARGV[11] reason, ARGV[12] metadata JSON.
-- Draws from the lots in consumption order; the entry's '_sc.l' records the draws.
local replay = idem_lookup()
if replay then return replay end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
apply_init_if_needed(needs_init, raw)
return commit('debit', -amount, bal - amount, ARGV[10], APP, ARGV[11], '', ARGV[12], nil,
              draw_for_entry(amount))
