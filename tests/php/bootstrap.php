<?php
/* A minimal WHMCS for the module's tests: Capsule on a real MariaDB (env
 * MYSQL_*, from scripts/services.sh), the WHMCS tables the module touches,
 * and logModuleCall/localAPI recording into tables. */

define('WHMCS', 1);

require_once '/usr/share/php/Illuminate/Database/autoload.php';
require_once '/usr/share/php/PhpAmqpLib/autoload.php';

use Illuminate\Database\Capsule\Manager;

class_alias(Manager::class, 'WHMCS\Database\Capsule');

foreach (['MYSQL_HOST', 'MYSQL_PORT', 'MYSQL_USER', 'MYSQL_PASSWORD', 'MYSQL_DATABASE', 'COMET_AMQP_URL'] as $v) {
    if (getenv($v) === false) {
        fwrite(STDERR, "tests/php: $v is not set; run scripts/php-test.sh (it starts the services)\n");
        exit(2);
    }
}

require_once __DIR__ . '/whmcs-functions.php';
whmcs_test_capsule();

/** The WHMCS tables (the columns the module reads or writes) and test recorders. */
function whmcs_test_schema(): void
{
    $s = Manager::schema();
    foreach (['tblhosting', 'tblclients', 'tblproducts', 'tblcustomfields', 'tblcustomfieldsvalues',
        'tblmodulelog', 'tbladmins', 'tblservers', 'test_localapi', 'mod_cometbackup_jobs'] as $t) {
        $s->dropIfExists($t);
    }
    $s->create('tblclients', function ($t) {
        $t->increments('id');
        $t->string('firstname')->default('');
        $t->string('lastname')->default('');
        $t->string('email')->default('');
    });
    $s->create('tblproducts', function ($t) {
        $t->increments('id');
        $t->string('name');
        $t->string('servertype')->default('cometbackup');
        $t->text('configoption1')->nullable();
        $t->text('configoption2')->nullable();
        $t->text('configoption3')->nullable();
    });
    $s->create('tblhosting', function ($t) {
        $t->increments('id');
        $t->unsignedInteger('userid');
        $t->unsignedInteger('packageid');
        $t->unsignedInteger('server')->default(0);
        $t->string('domainstatus')->default('Pending');
        $t->string('username')->default('');
        $t->text('password')->nullable();
    });
    $s->create('tblcustomfields', function ($t) {
        $t->increments('id');
        $t->string('type');
        $t->unsignedInteger('relid');
        $t->string('fieldname');
    });
    $s->create('tblcustomfieldsvalues', function ($t) {
        $t->increments('id');
        $t->unsignedInteger('fieldid');
        $t->unsignedInteger('relid');
        $t->text('value');
    });
    $s->create('tblmodulelog', function ($t) {
        $t->increments('id');
        $t->dateTime('date');
        $t->string('module');
        $t->string('action');
        $t->mediumText('request');
        $t->mediumText('response');
        $t->mediumText('arrdata');
    });
    $s->create('tbladmins', function ($t) {
        $t->increments('id');
        $t->string('username');
    });
    $s->create('tblservers', function ($t) {
        $t->increments('id');
        $t->string('name');
        $t->string('type');
        $t->string('hostname')->default('');
        $t->string('ipaddress')->default('');
        $t->string('port')->default('');
        $t->boolean('secure')->default(false);
        $t->string('username')->default('');
        $t->text('password');
        $t->boolean('disabled')->default(false);
    });
    $s->create('test_localapi', function ($t) {
        $t->increments('id');
        $t->string('command');
        $t->mediumText('params');
        $t->string('adminuser')->default('');
    });
}


/* Settings: the vector key and callback secret, the broker from the env. */
$GLOBALS['COMET_TEST_VECTORS'] = json_decode(
    (string)file_get_contents(__DIR__ . '/../vectors/crypto.json'), true);
$tmp = sys_get_temp_dir() . '/cometbackup-php-test-' . getmypid();
@mkdir($tmp, 0700, true);
$vec = $GLOBALS['COMET_TEST_VECTORS'];
file_put_contents("$tmp/job.key", $vec['key']['master_b64'] . "\n");
chmod("$tmp/job.key", 0600);
file_put_contents("$tmp/callback.secret", $vec['callback']['secret'] . "\n");
chmod("$tmp/callback.secret", 0600);
$GLOBALS['COMET_TEST_SETTINGS'] = [
    'broker_url' => getenv('COMET_AMQP_URL'),
    // A private exchange: on a broker shared with the C integration tests,
    // comet.jobs has the workers' queue bound, so nothing would be unroutable.
    'exchange' => 'comet.jobs.phptest',
    'key_id' => $vec['key']['kid'],
    'key_file' => "$tmp/job.key",
    'callback_secret_file' => "$tmp/callback.secret",
    'publish_timeout' => 5.0,
    'pending_on_failed_create' => true,
    'notify' => 'ticket',
    'notify_department_id' => 2,
    'notify_admin_user' => 'automation',
];
file_put_contents("$tmp/whmcs.php", '<?php return ' . var_export($GLOBALS['COMET_TEST_SETTINGS'], true) . ';');
putenv("COMETBACKUP_SETTINGS=$tmp/whmcs.php");
register_shutdown_function(function () use ($tmp) {
    foreach (glob("$tmp/*") as $f) {
        @unlink($f);
    }
    @rmdir($tmp);
});

require_once __DIR__ . '/../../whmcs/modules/servers/cometbackup/cometbackup.php';
require_once __DIR__ . '/../../whmcs/modules/servers/cometbackup/callback.php';
whmcs_test_schema();
require_once __DIR__ . '/TestCase.php';
