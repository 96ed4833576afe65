--: argv delta allow_overdraft action reason metadata
--: keys controls alerts
--: reply mutation
--: refusals overflow insufficient conflict replay_gone
-- adjust (signed admin correction): ARGV[9] delta, ARGV[10] allow overdraft ('1'/'0'),
-- ARGV[11] action, ARGV[12] reason, ARGV[13] metadata JSON.
-- A positive delta opens a lot (source 'adjust', never expiring; an overdraft owed is paid
-- off from it first); a negative one draws in consumption order, past the lots only as an
-- allowed overdraft.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then return replay end
local delta = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
local after = bal + delta
if after > MAX_CREDITS then return {'overflow', fmt(bal), fmt(delta)} end
-- Only a taking adjustment can overdraw; one that adds may leave a negative balance less so.
if delta < 0 and after < 0 and ARGV[10] ~= '1' then
  return {'insufficient', fmt(bal), fmt(-delta)}
end
if after < -MAX_CREDITS then return {'overflow', fmt(bal), fmt(delta)} end
if needs_init then apply_init_if_needed(needs_init, raw) else mark_opened(raw) end
if delta > 0 then
  return commit('adjust', delta, after, ARGV[11], APP, ARGV[12], '', ARGV[13],
                function(id) lots_open(id, delta, DEFAULT_PRIORITY, nil, 'adjust', bal) end,
                ',"l":"' .. lots_opening(DEFAULT_PRIORITY, nil) .. '"')
end
-- Not spending (no window), but it may cross the low-balance threshold.
local _, controlled = controls(KEYS[11], KEYS[12], 0, '', bal, after)
return commit('adjust', delta, after, ARGV[11], APP, ARGV[12], '', ARGV[13], controlled,
              draw_for_entry(-delta))
