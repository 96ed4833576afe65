-- adjust (signed admin correction): ARGV[7] delta, ARGV[8] allow overdraft ('1'/'0'),
-- ARGV[9] action, ARGV[10] reason, ARGV[11] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
local delta = tonumber(ARGV[7])
local bal, needs_init, raw = load_balance()
local after = bal + delta
if after > MAX_CREDITS then return {'overflow', fmt(bal), fmt(delta)} end
-- Only a taking adjustment can overdraw; one that adds may leave a negative balance less so.
if delta < 0 and after < 0 and ARGV[8] ~= '1' then
  return {'insufficient', fmt(bal), fmt(-delta)}
end
if after < -MAX_CREDITS then return {'overflow', fmt(bal), fmt(delta)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
return commit('adjust', delta, after, ARGV[9], APP, ARGV[10], '', ARGV[11])
