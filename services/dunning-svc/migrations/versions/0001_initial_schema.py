"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 08:46:43.415541
"""

from alembic import op
import sqlalchemy as sa
from ar_events.migrations import create_plumbing_tables, drop_plumbing_tables
from ar_events.tables import UtcDateTime
from ar_web.migrations import create_web_tables, drop_web_tables


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_plumbing_tables(op)
    create_web_tables(op)
    op.create_table('dunning_case',
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('state', sa.String(length=32), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('level', sa.Integer(), nullable=False),
    sa.Column('policy_name', sa.String(length=64), nullable=True),
    sa.Column('policy_version', sa.Integer(), nullable=True),
    sa.Column('next_action_at', UtcDateTime(), nullable=True, comment='durable timer: the scheduler claims due rows'),
    sa.Column('body', sa.Text(), nullable=False, comment='the domain DunningCase as JSON'),
    sa.Column('updated_at', UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('case_id'),
    sa.UniqueConstraint('client_id')
    )
    with op.batch_alter_table('dunning_case', schema=None) as batch_op:
        batch_op.create_index('ix_dunning_case_next_action', ['next_action_at'], unique=False, postgresql_where=sa.text('next_action_at IS NOT NULL'), sqlite_where=sa.text('next_action_at IS NOT NULL'))
        batch_op.create_index('ix_dunning_case_state', ['state', 'case_id'], unique=False)

    op.create_table('dunning_client',
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('profile', sa.Text(), nullable=True, comment='ClientProfile JSON (event-carried state)'),
    sa.Column('late_days_sum', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('paid_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('client_id')
    )
    op.create_table('dunning_invoice',
    sa.Column('invoice_id', sa.String(length=128), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('number', sa.String(length=64), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('issue_date', sa.Date(), nullable=True),
    sa.Column('due_date', sa.Date(), nullable=True),
    sa.Column('total', sa.BigInteger(), nullable=True),
    sa.Column('amount_due', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('disputes', sa.Text(), server_default='[]', nullable=False),
    sa.Column('pay_link', sa.String(length=2000), nullable=True),
    sa.Column('updated_at', UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('invoice_id')
    )
    with op.batch_alter_table('dunning_invoice', schema=None) as batch_op:
        batch_op.create_index('ix_dunning_invoice_client', ['client_id', 'status'], unique=False)

    op.create_table('dunning_policy_version',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.Text(), nullable=False, comment='the validated policy spec as JSON'),
    sa.Column('source', sa.String(length=500), nullable=True),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name', 'version')
    )
    op.create_table('dunning_task',
    sa.Column('task_id', sa.String(length=96), nullable=False),
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('step', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False, comment='open, claimed, done, cancelled'),
    sa.Column('assignee_name', sa.String(length=200), nullable=True),
    sa.Column('assignee_email', sa.String(length=320), nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('sla_due_at', UtcDateTime(), nullable=True),
    sa.Column('client_name', sa.String(length=300), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_at', UtcDateTime(), nullable=False),
    sa.Column('claimed_by', sa.String(length=320), nullable=True),
    sa.Column('claimed_at', UtcDateTime(), nullable=True),
    sa.Column('completed_at', UtcDateTime(), nullable=True),
    sa.Column('completed_by', sa.String(length=320), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('outcome_detail', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('task_id')
    )
    with op.batch_alter_table('dunning_task', schema=None) as batch_op:
        batch_op.create_index('ix_dunning_task_assignee', ['assignee_email', 'status'], unique=False)
        batch_op.create_index('ix_dunning_task_case', ['case_id'], unique=False)

    op.create_table('dunning_timeline',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('client_id', sa.String(length=128), nullable=False),
    sa.Column('case_id', sa.String(length=64), nullable=False),
    sa.Column('cycle', sa.Integer(), nullable=True),
    sa.Column('at', UtcDateTime(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False, comment='event_in, decision_out, task, hold, command'),
    sa.Column('type', sa.String(length=96), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=True),
    sa.Column('data', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('dunning_timeline', schema=None) as batch_op:
        batch_op.create_index('ix_dunning_timeline_client', ['client_id', 'id'], unique=False)

    op.create_index('ix_dunning_task_worklist', 'dunning_task', ['status', sa.text('priority DESC'), 'task_id'])


def downgrade() -> None:
    op.drop_index('ix_dunning_task_worklist', table_name='dunning_task')
    with op.batch_alter_table('dunning_timeline', schema=None) as batch_op:
        batch_op.drop_index('ix_dunning_timeline_client')

    op.drop_table('dunning_timeline')
    with op.batch_alter_table('dunning_task', schema=None) as batch_op:
        batch_op.drop_index('ix_dunning_task_case')
        batch_op.drop_index('ix_dunning_task_assignee')

    op.drop_table('dunning_task')
    op.drop_table('dunning_policy_version')
    with op.batch_alter_table('dunning_invoice', schema=None) as batch_op:
        batch_op.drop_index('ix_dunning_invoice_client')

    op.drop_table('dunning_invoice')
    op.drop_table('dunning_client')
    with op.batch_alter_table('dunning_case', schema=None) as batch_op:
        batch_op.drop_index('ix_dunning_case_state')
        batch_op.drop_index('ix_dunning_case_next_action', postgresql_where=sa.text('next_action_at IS NOT NULL'), sqlite_where=sa.text('next_action_at IS NOT NULL'))

    op.drop_table('dunning_case')
    drop_web_tables(op)
    drop_plumbing_tables(op)
