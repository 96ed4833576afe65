--: argv credits reason
--: reply init
--: refusals overflow
-- initialize_user: once per account, ever. ARGV[9] starting credits, ARGV[10] reason.
local raw = redis.call('GET', K_BAL)
if is_initialized(raw) then return {'exists', raw or '0'} end
local credits = tonumber(ARGV[9])
local base = tonumber(raw or '0')
if base + credits > MAX_CREDITS then return {'overflow', fmt(base), fmt(credits)} end
local id, values, _, opening = do_init(credits, base, ARGV[10])
return reply_entry(id, values, '0', opening)
